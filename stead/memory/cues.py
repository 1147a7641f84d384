"""Two cues beyond terms and meaning that say a memory answers a question.

- **Its subject is named.** Many memories open with who or what they are about, as a
  label before a colon ("Caroline: I went to a support group yesterday", "Customer
  Ada: prefers email"). A question naming that subject ("What did Caroline do ...?")
  is about those memories more than about others that merely mention the name
  ("Melanie: Thanks, Caroline!"), which plain term matching cannot tell apart.
- **Its neighbour matched.** Memories written as a numbered sequence under one prefix
  (a conversation's turns ``D1:3``, ``D1:4``; a ticket's messages ``t-17/msg-2``) hold
  their answers next to the turn that matches the question: "What made you pick
  it?" is answered by the turn after it. Recall shares part of a candidate's score
  with its neighbours in the sequence that are candidates too (no extra query).

Both are pure functions of what recall already fetched, so they cost no round trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

WORD = re.compile(r"[^\W_]+")
# A short label before the first colon: one to four words, no sentence punctuation.
_SUBJECT = re.compile(r"^\s*([^\W\d_][^\n:.!?]{0,38}?)\s*:\s")
_SEQUENCE = re.compile(r"^(.*?)(\d{1,9})$")
MAX_SUBJECT_WORDS = 4


def words(text: str) -> frozenset[str]:
    """Lower-case word set of `text` (letters and digits, any script)."""
    return frozenset(w.lower() for w in WORD.findall(text))


def subject(content: str | None) -> frozenset[str] | None:
    """The words of the label a memory opens with ("Caroline: ..."), if any."""
    if not content:
        return None
    m = _SUBJECT.match(content)
    if m is None:
        return None
    label = words(m.group(1))
    return label if 0 < len(label) <= MAX_SUBJECT_WORDS else None


def names_subject(question: frozenset[str], content: str | None) -> bool:
    """Whether the question names every word of the memory's subject label."""
    label = subject(content)
    return label is not None and label <= question


def neighbours(keys: Mapping[str, tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """For candidates given as id -> (namespace, key): the other candidates whose key is
    the previous or next number under the same prefix in the same namespace."""
    position: dict[tuple[str, str, int], str] = {}
    parsed: dict[str, tuple[str, str, int]] = {}
    for cid, (namespace, key) in keys.items():
        m = _SEQUENCE.match(key)
        if m is not None:
            place = (namespace, m.group(1), int(m.group(2)))
            parsed[cid] = place
            position[place] = cid
    out: dict[str, tuple[str, ...]] = {}
    for cid, (namespace, prefix, n) in parsed.items():
        found = _present(position, ((namespace, prefix, n - 1), (namespace, prefix, n + 1)))
        if found:
            out[cid] = found
    return out


def _present(
    position: Mapping[tuple[str, str, int], str], places: Iterable[tuple[str, str, int]]
) -> tuple[str, ...]:
    return tuple(position[p] for p in places if p in position)
