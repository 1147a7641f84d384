"""The recall cues as pure functions: a subject label, and neighbours in a sequence."""

from __future__ import annotations

from stead.memory import cues
from stead.memory.fusion import Fusion


def test_a_leading_label_is_the_subject_and_a_sentence_is_not() -> None:
    assert cues.subject("Caroline: I went to a support group.") == frozenset({"caroline"})
    assert cues.subject("Customer Ada Byron: prefers email") == frozenset(
        {"customer", "ada", "byron"}
    )
    assert cues.subject("Note that the time is 10:30 now.") is None
    assert cues.subject("Runbook 7: restart nightly") is not None
    assert cues.subject(None) is None and cues.subject("no label here") is None


def test_a_question_names_the_subject_only_with_every_word_of_it() -> None:
    question = cues.words("What did Caroline's sister paint?")
    assert cues.names_subject(question, "Caroline: my sister paints lakes.")
    assert not cues.names_subject(question, "Melanie: Caroline, your sister paints!")
    assert not cues.names_subject(cues.words("What does Ada like?"), "Customer Ada Byron: tea")


def test_neighbours_are_the_next_and_previous_number_under_one_prefix() -> None:
    found = cues.neighbours(
        {
            "a": ("chat", "D1:3"),
            "b": ("chat", "D1:4"),
            "c": ("chat", "D2:4"),  # another session: not a neighbour of D1:3
            "d": ("other", "D1:2"),  # another namespace
            "e": ("chat", "D1:6"),  # a gap
            "f": ("chat", "summary"),
        }
    )
    assert found == {"a": ("b",), "b": ("a",)}


def test_a_neighbour_shares_part_of_its_score_and_scores_stay_in_range() -> None:
    fusion = Fusion(vector_weight=0.5, lexical_weight=0.5, neighbour_share=0.2)
    vector = [("match", 0.9), ("answer", 0.1), ("other", 0.15)]
    lexical = [("match", 3.0), ("other", 0.5)]

    plain = dict(fusion.fuse(vector, lexical, set()))
    shared = dict(fusion.fuse(vector, lexical, set(), set(), {"match": ("answer",)}))

    assert plain["answer"] < plain["other"]
    assert shared["answer"] > shared["other"]
    assert all(0 < s <= 1 for s in shared.values())
