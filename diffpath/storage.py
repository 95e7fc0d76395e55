"""Read and write any fsspec URI (local paths, file://, s3://, memory://) safely."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.core import url_to_fs

from diffpath.errors import StorageError

__all__ = ["exists", "filesystem", "join", "read_bytes", "write_atomic", "write_bytes"]


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URI; options come from fsspec config and the environment."""
    try:
        return url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise StorageError(f"cannot open storage {uri!r}: {err}") from err


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/'."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except (OSError, FileNotFoundError) as err:
        raise StorageError(f"cannot read {uri!r}: {err}") from err


@contextmanager
def write_atomic(uri: str) -> Iterator[IO[bytes]]:
    """Write to a temporary key, then move it to `uri`: readers never see half a file."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}" if parent else f".tmp-{uuid.uuid4().hex}"
    try:
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as handle:
            yield handle
        fs.mv(tmp, path)
    except OSError as err:
        raise StorageError(f"cannot write {uri!r}: {err}") from err
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_bytes(uri: str, data: bytes) -> str:
    """Atomically write `data` to `uri`; returns the URI."""
    with write_atomic(uri) as handle:
        handle.write(data)
    return uri
