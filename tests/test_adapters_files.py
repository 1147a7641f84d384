"""``files.write`` / ``files.read`` in a real temporary directory, attacks included."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.files import FileSandbox
from adapters.registry import AdapterResources, default_catalog
from stead.operations.base import AdapterError, OperationContext
from stead.operations.catalog import InvalidArguments

CATALOG = default_catalog(plugins=False)
WRITE = CATALOG.get("files.write")
READ = CATALOG.get("files.read")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sandbox"


@pytest.fixture
def resources(root: Path) -> AdapterResources:
    return AdapterResources(files=FileSandbox(root))


def _ctx(resources: AdapterResources, tenant: str = "acme", step: str = "s1") -> OperationContext:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    return OperationContext(
        tenant=tenant,
        principal="user:ada",
        workflow_id=wf,
        step_id=step,
        idempotency_key=f"{wf}/{step}",
        resources=resources,
    )


async def _write(ctx: OperationContext, **args: Any) -> Any:
    return await WRITE.run(ctx, CATALOG.parse_args("files.write", args))


async def _read(ctx: OperationContext, **args: Any) -> Any:
    return await READ.run(ctx, CATALOG.parse_args("files.read", args))


async def test_write_then_read_round_trips_text(resources: AdapterResources, root: Path) -> None:
    written = await _write(_ctx(resources), path="reports/2026/q1.txt", content="héllo\n")
    assert written.created is True
    assert written.bytes == len("héllo\n".encode())
    assert written.sha256 == hashlib.sha256("héllo\n".encode()).hexdigest()
    assert (root / "acme" / "reports" / "2026" / "q1.txt").read_text() == "héllo\n"
    got = await _read(_ctx(resources), path="reports/2026/q1.txt")
    assert (got.content, got.size, got.truncated, got.sha256) == (
        "héllo\n",
        written.bytes,
        False,
        written.sha256,
    )


async def test_binary_round_trips_as_base64(resources: AdapterResources, root: Path) -> None:
    blob = bytes(range(256))
    encoded = base64.b64encode(blob).decode()
    await _write(_ctx(resources), path="blob.bin", content=encoded, encoding="base64")
    assert (root / "acme" / "blob.bin").read_bytes() == blob
    got = await _read(_ctx(resources), path="blob.bin", encoding="base64")
    assert base64.b64decode(got.content) == blob


async def test_tenants_see_only_their_own_sandbox(resources: AdapterResources) -> None:
    await _write(_ctx(resources, "acme"), path="shared.txt", content="acme's")
    with pytest.raises(AdapterError) as caught:
        await _read(_ctx(resources, "globex"), path="shared.txt")
    assert caught.value.details["reason"] == "not_found"
    assert caught.value.retryable is False


async def test_overwrite_replaces_and_says_the_file_existed(resources: AdapterResources) -> None:
    first = await _write(_ctx(resources), path="a.txt", content="one")
    second = await _write(_ctx(resources), path="a.txt", content="two")
    assert (first.created, second.created) == (True, False)
    assert (await _read(_ctx(resources), path="a.txt")).content == "two"


async def test_create_mode_accepts_its_own_retry_and_refuses_other_content(
    resources: AdapterResources,
) -> None:
    ctx = _ctx(resources)
    first = await _write(ctx, path="once.txt", content="v1", mode="create")
    retry = await _write(ctx, path="once.txt", content="v1", mode="create")
    assert (first.created, retry.created) == (True, False)
    with pytest.raises(AdapterError) as caught:
        await _write(_ctx(resources), path="once.txt", content="v2", mode="create")
    assert caught.value.details["reason"] == "exists" and not caught.value.retryable
    assert (await _read(_ctx(resources), path="once.txt")).content == "v1"


async def test_read_cuts_at_max_bytes_without_splitting_a_character(
    resources: AdapterResources,
) -> None:
    await _write(_ctx(resources), path="long.txt", content="aé" * 10)
    got = await _read(_ctx(resources), path="long.txt", max_bytes=2)  # "a" + half of "é"
    assert (got.content, got.truncated, got.size) == ("a", True, 30)
    assert got.sha256 == hashlib.sha256(b"a").hexdigest()
    assert (await _read(_ctx(resources), path="long.txt", max_bytes=4)).content == "aéa"


async def test_writes_leave_no_temporary_files(resources: AdapterResources, root: Path) -> None:
    for i in range(3):
        await _write(_ctx(resources), path="dir/f.txt", content=str(i))
    assert sorted(p.name for p in (root / "acme" / "dir").iterdir()) == ["f.txt"]


@pytest.mark.parametrize(
    "path",
    ["../escape.txt", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", "a\\b", "a\x00b", "a/"],
)
async def test_escaping_paths_fail_the_schema_before_any_io(
    resources: AdapterResources, root: Path, path: str
) -> None:
    for op in ("files.write", "files.read"):
        args: dict[str, Any] = {"path": path}
        if op == "files.write":
            args["content"] = "x"
        with pytest.raises(InvalidArguments) as caught:
            CATALOG.parse_args(op, args)
        assert "path" in str(caught.value)
    assert not root.exists()


def test_bad_base64_and_unknown_fields_fail_the_schema() -> None:
    with pytest.raises(InvalidArguments, match="not valid base64"):
        CATALOG.parse_args("files.write", {"path": "a", "content": "@@@", "encoding": "base64"})
    with pytest.raises(InvalidArguments, match="Extra inputs"):
        CATALOG.parse_args("files.read", {"path": "a", "follow_links": True})


async def test_a_symlink_to_a_file_outside_is_refused(
    resources: AdapterResources, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("host secret")
    await _write(_ctx(resources), path="placeholder", content="")
    (root / "acme" / "link.txt").symlink_to(outside)
    with pytest.raises(AdapterError) as caught:
        await _read(_ctx(resources), path="link.txt")
    assert caught.value.details["reason"] == "symlink"
    with pytest.raises(AdapterError):
        await _write(_ctx(resources), path="link.txt", content="x", mode="create")
    assert outside.read_text() == "host secret"


async def test_a_symlinked_directory_is_refused_for_read_and_write(
    resources: AdapterResources, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    await _write(_ctx(resources), path="placeholder", content="")
    (root / "acme" / "docs").symlink_to(outside, target_is_directory=True)
    for attempt in (
        _read(_ctx(resources), path="docs/secret.txt"),
        _write(_ctx(resources), path="docs/planted.txt", content="x"),
        _write(_ctx(resources), path="docs/deeper/planted.txt", content="x"),
    ):
        with pytest.raises(AdapterError) as caught:
            await attempt
        assert caught.value.details["reason"] == "symlink"
        assert "docs is a symbolic link" in caught.value.message
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_a_tenant_directory_replaced_by_a_symlink_is_refused(
    resources: AdapterResources, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "other-tenant"
    outside.mkdir()
    root.mkdir()
    (root / "acme").symlink_to(outside, target_is_directory=True)
    with pytest.raises(AdapterError) as caught:
        await _write(_ctx(resources), path="x.txt", content="x")
    assert caught.value.details["reason"] == "symlink"
    assert list(outside.iterdir()) == []


async def test_a_fifo_is_refused_without_hanging(resources: AdapterResources, root: Path) -> None:
    await _write(_ctx(resources), path="placeholder", content="")
    os.mkfifo(root / "acme" / "pipe")
    with pytest.raises(AdapterError) as caught:
        await _read(_ctx(resources), path="pipe")
    assert caught.value.details["reason"] == "not_a_file"


async def test_a_worker_without_a_sandbox_says_how_to_configure_one() -> None:
    with pytest.raises(AdapterError, match="STEAD_FILES_ROOT") as caught:
        await _read(_ctx(AdapterResources()), path="a.txt")
    assert caught.value.retryable is False
