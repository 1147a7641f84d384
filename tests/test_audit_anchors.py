"""The anchor file on its own (no server): two signed slots, the newest valid one wins,
and nothing written without the key is believed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stead.audit.anchors import AnchorStore, AnchorUnreadable

KEY = os.urandom(32)


def test_the_newest_head_is_read_back(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "anchors")
    for seq in range(1, 6):
        store.advance(KEY, "acme", seq, f"{seq:064x}")
    anchor = store.read("acme", KEY)
    assert anchor is not None and (anchor.seq, anchor.mac) == (5, f"{5:064x}")
    assert store.tenants() == ["acme"]
    assert (tmp_path / "anchors" / "acme.anchor").stat().st_mode & 0o777 == 0o600


def test_an_older_head_never_replaces_a_newer_one_in_this_process(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path)
    store.advance(KEY, "acme", 7, "a" * 64)
    store.advance(KEY, "acme", 6, "b" * 64)  # a commit that finished later
    store.advance(KEY, "acme", 5, "c" * 64)
    anchor = store.read("acme", KEY)
    assert anchor is not None and anchor.seq == 7


def test_a_second_process_with_an_older_head_only_makes_the_anchor_lag(tmp_path: Path) -> None:
    ours, theirs = AnchorStore(tmp_path), AnchorStore(tmp_path)
    ours.advance(KEY, "acme", 8, "a" * 64)
    theirs.advance(KEY, "acme", 7, "b" * 64)  # the other parity's slot: 8 survives
    anchor = ours.read("acme", KEY)
    assert anchor is not None and anchor.seq == 8


def test_anchors_signed_with_another_key_are_not_believed(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path)
    store.advance(os.urandom(32), "acme", 3, "a" * 64)
    with pytest.raises(AnchorUnreadable, match="no anchor signed with the audit key"):
        store.read("acme", KEY)


def test_an_anchor_for_another_tenant_is_not_believed(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path)
    store.advance(KEY, "other", 3, "a" * 64)
    (tmp_path / "other.anchor").rename(tmp_path / "acme.anchor")
    with pytest.raises(AnchorUnreadable):
        store.read("acme", KEY)


def test_no_file_or_a_never_written_file_is_no_anchor(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path)
    assert store.read("acme", KEY) is None
    (tmp_path / "acme.anchor").write_bytes(b"")
    assert store.read("acme", KEY) is None


def test_tenant_ids_are_checked_before_they_become_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a tenant id"):
        AnchorStore(tmp_path).path("../etc/passwd")
