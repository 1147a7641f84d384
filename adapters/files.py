"""``files.write`` / ``files.read``: a sandboxed directory per tenant under a configured root.

The sandbox is ``<root>/<tenant>/``. Paths in args are relative POSIX paths; the
schema refuses absolute paths, ``..``, ``.``, empty segments, backslashes and NUL,
so most escapes never get past validation. The rest (a symlink planted inside the
sandbox, a directory swapped for a link between check and use) is stopped at the
system-call level: every component is opened with ``O_NOFOLLOW`` relative to the
descriptor of its parent (``dir_fd``), so no path is ever resolved by name from the
root and no symlink is ever followed, whenever it appeared.

Writes go to a temporary file in the target directory and are renamed into place,
so a reader never sees half a file and a crash leaves no partial content. Writing
the same bytes to the same path twice leaves the same state, which is why
``files.write`` is idempotent natively; in ``create`` mode an existing file with the
same content counts as the earlier attempt's effect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from pydantic import Field, field_validator, model_validator

from stead.contracts.base import Closed
from stead.operations.base import AdapterError, Operation, OperationContext

CONTENT_LIMIT = 1024 * 1024  # the result lands in workflow history; keep it well under its cap
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RETRYABLE = {errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EDQUOT}

Encoding = Literal["utf-8", "base64"]


def _check_relative(value: str) -> str:
    if "\x00" in value or "\\" in value:
        raise ValueError("a path may not contain NUL or backslashes; use '/' between parts")
    if value.startswith("/"):
        raise ValueError(f"{value!r} is absolute; paths are relative to the tenant's sandbox")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"{value!r} has an empty, '.' or '..' segment; name the file from the sandbox "
            "root, e.g. reports/2026/q1.csv"
        )
    if any(len(part.encode()) > 255 for part in parts):
        raise ValueError("each path segment must be at most 255 bytes")
    return value


class WriteArgs(Closed):
    path: str = Field(
        min_length=1, max_length=1024, description="Relative path inside the tenant's sandbox."
    )
    content: str = Field(
        max_length=2 * CONTENT_LIMIT, description="Text, or base64 when encoding is base64."
    )
    encoding: Encoding = "utf-8"
    mode: Literal["overwrite", "create"] = Field(
        default="overwrite", description="create refuses to replace different content."
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _check_relative(value)

    @model_validator(mode="after")
    def _decodable(self) -> WriteArgs:
        size = len(self.data())
        if size > CONTENT_LIMIT:
            raise ValueError(f"content is {size} bytes; the limit is {CONTENT_LIMIT}")
        return self

    def data(self) -> bytes:
        """The bytes to write; the validator has already checked they decode."""
        if self.encoding == "utf-8":
            return self.content.encode()
        try:
            return base64.b64decode(self.content, validate=True)
        except binascii.Error:
            raise ValueError("content is not valid base64 (encoding is 'base64')") from None


class WriteResult(Closed):
    path: str
    bytes: int
    sha256: str
    created: bool = Field(description="False when the file existed before this write.")


class ReadArgs(Closed):
    path: str = Field(
        min_length=1, max_length=1024, description="Relative path inside the tenant's sandbox."
    )
    encoding: Encoding = "utf-8"
    max_bytes: int = Field(default=CONTENT_LIMIT, ge=1, le=CONTENT_LIMIT)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _check_relative(value)


class ReadResult(Closed):
    path: str
    content: str
    encoding: Encoding
    size: int = Field(description="The file's full size in bytes.")
    sha256: str = Field(description="Hash of the bytes returned.")
    truncated: bool


@dataclass(frozen=True)
class FileSandbox:
    """The worker's sandbox root; each tenant gets ``<root>/<tenant>``, created on first use."""

    root: Path

    @contextmanager
    def tenant_dir(self, tenant: str) -> Iterator[int]:
        """A descriptor of the tenant's directory, refusing a symlink in its place."""
        if not _TENANT.match(tenant):
            raise AdapterError(
                f"tenant {tenant!r} cannot name a sandbox directory",
                retryable=False,
                details={"reason": "bad_tenant"},
            )
        self.root.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield _descend(root_fd, tenant, create=True, shown=tenant)
        finally:
            os.close(root_fd)


async def write(ctx: OperationContext, args: WriteArgs) -> WriteResult:
    # Blocking file I/O runs in a thread so one slow disk cannot stall the worker's loop.
    return await asyncio.to_thread(_write, _sandbox(ctx), ctx.tenant, args, args.data())


async def read(ctx: OperationContext, args: ReadArgs) -> ReadResult:
    return await asyncio.to_thread(_read, _sandbox(ctx), ctx.tenant, args)


def _write(sandbox: FileSandbox, tenant: str, args: WriteArgs, data: bytes) -> WriteResult:
    digest = hashlib.sha256(data).hexdigest()
    *dirs, name = args.path.split("/")
    with _os_errors(args.path), sandbox.tenant_dir(tenant) as base:
        fd = _walk(base, dirs, create=True, path=args.path)
        try:
            existed = _existing_digest(fd, name, args.path) is not None
            tmp = f".{name[:200]}.{secrets.token_hex(6)}.stead-tmp"
            _write_new(fd, tmp, data)
            try:
                if args.mode == "create":
                    # link() never replaces, so two racing creates cannot both win.
                    os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                    existed = False
                else:
                    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except FileExistsError:
                if _existing_digest(fd, name, args.path) != digest:
                    raise AdapterError(
                        f"{args.path} already exists with other content and mode is 'create'; "
                        "use mode 'overwrite' to replace it",
                        retryable=False,
                        details={"path": args.path, "reason": "exists"},
                    ) from None
                existed = True  # the same bytes: an earlier attempt of this step wrote them
            finally:
                with suppress(FileNotFoundError):  # renamed away, or left behind by link()
                    os.unlink(tmp, dir_fd=fd)
            os.fsync(fd)
        finally:
            os.close(fd)
    return WriteResult(path=args.path, bytes=len(data), sha256=digest, created=not existed)


def _read(sandbox: FileSandbox, tenant: str, args: ReadArgs) -> ReadResult:
    *dirs, name = args.path.split("/")
    with _os_errors(args.path), sandbox.tenant_dir(tenant) as base:
        fd = _walk(base, dirs, create=False, path=args.path)
        try:
            data, size = _read_file(fd, name, args.path, args.max_bytes)
        finally:
            os.close(fd)
    truncated = size > len(data)
    if args.encoding == "base64":
        content = base64.b64encode(data).decode()
    else:
        content, data = _utf8(data, truncated, args.path)
    return ReadResult(
        path=args.path,
        content=content,
        encoding=args.encoding,
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
        truncated=truncated,
    )


def _walk(base: int, dirs: list[str], *, create: bool, path: str) -> int:
    """A new descriptor of the directory ``dirs`` below ``base``, never through a link."""
    fd = os.dup(base)
    try:
        for i, part in enumerate(dirs):
            child = _descend(fd, part, create=create, shown="/".join(dirs[: i + 1]), path=path)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _descend(parent: int, name: str, *, create: bool, shown: str, path: str = "") -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        with suppress(FileExistsError):  # a concurrent write made it; open it like any other
            os.mkdir(name, 0o700, dir_fd=parent)
        return _descend(parent, name, create=False, shown=shown, path=path)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        _refuse_link_or_file(parent, name, shown, path or shown)


def _refuse_link_or_file(parent: int, name: str, shown: str, path: str) -> NoReturn:
    if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
        raise AdapterError(
            f"{path} is refused: {shown} is a symbolic link, and the sandbox follows none",
            retryable=False,
            details={"path": path, "reason": "symlink"},
        )
    raise AdapterError(
        f"{path} is refused: {shown} is not a directory",
        retryable=False,
        details={"path": path, "reason": "not_a_directory"},
    )


def _existing_digest(dirfd: int, name: str, path: str) -> str | None:
    try:
        data, _ = _read_file(dirfd, name, path, None)
    except FileNotFoundError:
        return None
    return hashlib.sha256(data).hexdigest()


def _read_file(dirfd: int, name: str, path: str, limit: int | None) -> tuple[bytes, int]:
    # O_NONBLOCK: a FIFO planted in the sandbox must not hang the worker on open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        _refuse_link_or_file(dirfd, name, path, path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AdapterError(
                f"{path} is not a regular file",
                retryable=False,
                details={"path": path, "reason": "not_a_file"},
            )
        want = info.st_size if limit is None else min(limit, info.st_size)
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = os.read(fd, want - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks), info.st_size
    finally:
        os.close(fd)


def _write_new(dirfd: int, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dirfd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _utf8(data: bytes, truncated: bool, path: str) -> tuple[str, bytes]:
    # A cut can split a multi-byte character; drop that partial tail, nothing else.
    for cut in range(4 if truncated else 1):
        part = data[: len(data) - cut]
        try:
            return part.decode("utf-8"), part
        except UnicodeDecodeError:
            continue
    raise AdapterError(
        f"{path} is not UTF-8 text; read it with encoding 'base64'",
        retryable=False,
        details={"path": path, "reason": "not_utf8"},
    )


@contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """Retryable only when the disk may recover; a missing or forbidden path will not."""
    try:
        yield
    except AdapterError:
        raise
    except FileNotFoundError:
        raise AdapterError(
            f"{path} does not exist in the tenant's sandbox",
            retryable=False,
            details={"path": path, "reason": "not_found"},
        ) from None
    except OSError as exc:
        raise AdapterError(
            f"{path}: {os.strerror(exc.errno or 0)}",
            retryable=exc.errno in _RETRYABLE,
            details={"path": path, "reason": errno.errorcode.get(exc.errno or 0, "oserror")},
        ) from None


def _sandbox(ctx: OperationContext) -> FileSandbox:
    sandbox = getattr(ctx.resources, "files", None)
    if not isinstance(sandbox, FileSandbox):
        raise AdapterError(
            "the files adapter has no sandbox on this worker: the worker must pass "
            "AdapterResources(files=FileSandbox(root)) (STEAD_FILES_ROOT)",
            retryable=False,
            details={"reason": "no_sandbox"},
        )
    return sandbox


FILES_WRITE: Operation[WriteArgs, WriteResult] = Operation(
    name="files.write",
    description=(
        "Write a text or base64 file at a relative path in the tenant's sandbox directory "
        "(atomic replace; mode 'create' refuses to replace different content)."
    ),
    args_model=WriteArgs,
    result_model=WriteResult,
    run=write,
    side_effect="write",
    risk="low",
    idempotency="native",
    scopes=("files:write",),
    timeout_seconds=30.0,
    rate_limit_per_minute=300,
)

FILES_READ: Operation[ReadArgs, ReadResult] = Operation(
    name="files.read",
    description="Read a file at a relative path in the tenant's sandbox directory.",
    args_model=ReadArgs,
    result_model=ReadResult,
    run=read,
    side_effect="read",
    risk="low",
    idempotency="native",
    scopes=("files:read",),
    timeout_seconds=30.0,
    rate_limit_per_minute=600,
)
