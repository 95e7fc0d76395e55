"""Read and write any fsspec URI (local paths, file://, s3://, memory://) safely.

Every write is atomic: a reader sees the old object, the new one or none, never half of
one. `is_transient` is the one place that decides which storage failures deserve a retry.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.config import apply_config
from fsspec.core import split_protocol
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import get_filesystem_class

from diffpath.errors import StorageError
from diffpath.io import native

__all__ = [
    "create_exclusive",
    "exists",
    "explain",
    "filesystem",
    "find",
    "glob",
    "guard_writes",
    "is_transient",
    "join",
    "list_objects",
    "listdir",
    "numbered",
    "parquet_bytes",
    "protocol_prefix",
    "read_bytes",
    "read_each",
    "read_json",
    "read_many",
    "read_parquet",
    "remove",
    "write_bytes",
    "write_json",
    "write_many",
    "write_parquet",
]

CONNECT_TIMEOUT = 10.0  # s per connection attempt; with 3 attempts an endpoint is given up in ~30 s
# errno values s3fs gives throttling (SlowDown, 503), busy and server-side (5xx) failures
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EREMOTEIO, errno.ETIMEDOUT})


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a URI by its protocol alone, so that every character of a
    path is a path character: fsspec's URL chaining would read `a.jpg::b.jpg` as `a.jpg`.
    Options come from fsspec config and the environment; S3 requests retry in botocore's
    `AWS_RETRY_MODE` (default adaptive: 3 attempts, backs off when throttled) with a
    `CONNECT_TIMEOUT` per connection, tasks retry in Prefect."""
    protocol, _ = split_protocol(uri)
    try:
        cls = get_filesystem_class(protocol or "file")
        options = apply_config(cls, {})
        if "s3" in (cls.protocol if isinstance(cls.protocol, tuple) else (cls.protocol,)):
            retries = {"mode": os.environ.get("AWS_RETRY_MODE", "adaptive")}
            config = {
                "retries": retries,
                "connect_timeout": CONNECT_TIMEOUT,
                **options.get("config_kwargs", {}),
            }
            options = {**options, "config_kwargs": config}  # fsspec config wins
        return cls(**options), cls._strip_protocol(uri)
    except (ImportError, ValueError) as err:
        raise StorageError(f"cannot open storage {uri!r}: {err}") from err


def explain(err: BaseException, uri: str) -> str | None:
    """One line saying what failed at `uri` and what to do, for the storage failures a
    person fixes (credentials, endpoint, bucket, permissions); None for any other."""
    names = set()
    seen: BaseException | None = err
    while seen is not None:
        names.add(type(seen).__name__)
        if isinstance(seen, PermissionError):
            return f"access denied to {uri}: check that the credentials may read and write it"
        if "bucket does not exist" in str(seen) or "NoSuchBucket" in str(seen):
            bucket = uri.split("://", 1)[-1].split("/", 1)[0]
            return f"bucket {bucket!r} does not exist ({uri}): create it or correct the URI"
        seen = seen.__cause__ or seen.__context__
    if "ProfileNotFound" in names:
        return f"{err} (AWS_PROFILE) for {uri}: name a profile of ~/.aws/config, or unset it"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return (
            f"no storage credentials for {uri}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or the key and secret in fsspec's s3 config"
        )
    unreachable = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"}
    if names & unreachable:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
        return (
            f"cannot reach the storage endpoint ({endpoint}) for {uri}: check "
            "AWS_ENDPOINT_URL (or fsspec's endpoint_url) and the network"
        )
    return None


# Checks run before any write under a prefix (this process): a run that lost its output
# lock stops before it writes again (`diffpath.io.lock.output_lock`).
_WRITE_GUARDS: dict[str, Callable[[], None]] = {}


@contextmanager
def guard_writes(prefix: str, check: Callable[[], None]) -> Iterator[None]:
    """Call `check` (which raises to refuse) before every write under `prefix` while held."""
    _WRITE_GUARDS[prefix] = check
    try:
        yield
    finally:
        _WRITE_GUARDS.pop(prefix, None)


def _check_guards(uris: Iterable[str]) -> None:
    for prefix, check in list(_WRITE_GUARDS.items()):
        if any(uri.startswith(prefix) for uri in uris):
            check()


Fn = TypeVar("Fn", bound=Callable[..., Any])


def _explained(func: Fn) -> Fn:
    """Turn the failures `explain` knows into a one-line `StorageError` naming the URI
    (the first argument, or the first of them); the original stays its cause."""

    @functools.wraps(func)
    def wrapper(target: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(target, *args, **kwargs)
        except Exception as err:
            uri = target if isinstance(target, str) else next(iter(target), "")
            reason = explain(err, uri)
            if reason is None:
                raise
            raise StorageError(reason) from (err.__cause__ or err)

    return wrapper  # type: ignore[return-value]


def protocol_prefix(uri: str) -> str:
    """The `s3://` (or other protocol) a URI starts with; empty for a local path."""
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


@_explained
def glob(pattern: str) -> list[str]:
    """The URIs of the objects matching `pattern` (`*` stays within one folder), sorted."""
    fs, path = filesystem(pattern)
    try:
        return sorted(protocol_prefix(pattern) + p for p in fs.glob(path))
    except OSError as err:
        raise StorageError(f"cannot list {pattern!r}: {err}") from err


@_explained
def find(folder: str) -> list[str]:
    """The paths, relative to `folder`, of every object under it (fresh: no cached
    listing), sorted; empty when there is none. One request per 1,000 objects on S3."""
    fs, path = filesystem(folder)
    fs.invalidate_cache(path)
    try:
        found = fs.find(path)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StorageError(f"cannot list {folder!r}: {err}") from err
    root = path.rstrip("/") + "/"
    return sorted(p[len(root) :] for p in found if p.startswith(root))


def list_objects(folder: str) -> pa.Array:
    """Every object under `folder` as Arrow strings, paths as `find` gives them (no
    protocol), unsorted; no Python object per object where it can: S3 through the native
    client a page at a time (`native.list_paths`), else fsspec's `find` with its listings
    cache dropped after (s3fs keeps an info dict per object there)."""
    fs, path = filesystem(folder)
    found = native.list_paths(fs, folder)
    if found is None:
        try:
            found = pa.array(fs.find(path), pa.string())
        finally:
            fs.invalidate_cache()  # every folder under it, not only `path`
    return found


@_explained
def listdir(folder: str) -> list[str]:
    """The names of the objects and folders directly in `folder` (fresh), sorted; empty
    when there is none. One request per 1,000 names on S3."""
    fs, path = filesystem(folder)
    try:
        found = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StorageError(f"cannot list {folder!r}: {err}") from err
    return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in found)


def numbered(folder: str, suffix: str) -> list[int]:
    """The numbers N of the `NNNNNNNNNN<suffix>` objects in `folder`, ascending:
    generations created with `create_exclusive`, newest last."""
    stems = (name.removesuffix(suffix) for name in listdir(folder) if name.endswith(suffix))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/'."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


@_explained
def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def remove(uri: str) -> None:
    """Delete one object if it exists."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm_file(path)


@_explained
def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except OSError as err:
        raise StorageError(f"cannot read {uri!r}: {err}") from err


def read_json(uri: str) -> Any:
    """A JSON object; a `StorageError` naming `uri` when it is not JSON."""
    try:
        return json.loads(read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StorageError(f"{uri!r} is not valid JSON: {err}") from err


@_explained
def read_parquet(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri)
    try:
        with fs.open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)
    except OSError as err:
        raise StorageError(f"cannot read {uri!r}: {err}") from err


@_explained
def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `data` to `uri` only if nothing is there (False if something is), atomically:
    a hard link of a finished temporary file on a local disk, a conditional PUT
    (`If-None-Match: *`) on S3; readers never see half of it."""
    _check_guards([uri])
    fs, path = filesystem(uri)
    try:
        if not isinstance(fs, LocalFileSystem):
            with fs.open(path, "xb") as handle:
                handle.write(data)
            return True
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)
        finally:
            os.remove(tmp)
    except FileExistsError:
        return False
    except OSError as err:
        raise StorageError(f"cannot create {uri!r}: {err}") from err
    return True


def write_bytes(uri: str, data: bytes) -> str:
    """Atomically write `data` to `uri` (`write_many`); returns the URI."""
    write_many({uri: data})
    return uri


def write_json(data: Any, uri: str) -> str:
    return write_bytes(uri, json.dumps(data, indent=2, allow_nan=False).encode())


def write_parquet(
    table: pa.Table,
    uri: str,
    metadata: Mapping[str, Any] | None = None,
    row_group_size: int | None = None,
    use_dictionary: bool | Sequence[str] = True,
) -> str:
    """Atomically write a table as zstd Parquet; `metadata` goes into the schema as JSON."""
    return write_bytes(uri, parquet_bytes(table, metadata, row_group_size, use_dictionary))


def parquet_bytes(
    table: pa.Table,
    metadata: Mapping[str, Any] | None = None,
    row_group_size: int | None = None,
    use_dictionary: bool | Sequence[str] = True,
) -> bytes:
    """A table as zstd Parquet bytes, `metadata` in the schema under `diffpath` as JSON;
    `use_dictionary` as pyarrow's (columns of mostly distinct strings write smaller, and
    with less memory, without one)."""
    if metadata is not None:
        table = table.replace_schema_metadata({b"diffpath": json.dumps(metadata).encode()})
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="zstd",
        row_group_size=row_group_size,
        use_dictionary=use_dictionary,
    )
    return buffer.getvalue()


IN_FLIGHT = 64  # concurrent s3fs requests per worker (`native.IN_FLIGHT` for its GETs)


@_explained
def read_each(uris: Sequence[str], max_bytes: int | None = None) -> dict[str, bytes | OSError]:
    """Each object's bytes (at most its first `max_bytes`), one ranged GET each (an
    unranged s3fs read first HEADs the object for its size), `IN_FLIGHT` at a time on
    object stores, through the native client on S3 where it can (`native`); a failure
    stands in its object's place."""
    if not uris:
        return {}
    fs, _ = filesystem(uris[0])
    found = native.read_each(fs, uris, max_bytes)
    if found is not None:
        return found
    paths = {filesystem(uri)[1]: uri for uri in uris}
    batch = {"batch_size": IN_FLIGHT} if getattr(fs, "async_impl", False) else {}
    try:
        found = fs.cat_ranges(list(paths), 0, max_bytes, on_error="return", **batch)
    except OSError as err:
        raise StorageError(f"cannot read {len(uris)} objects under {uris[0]!r}: {err}") from err
    out = {}
    for path, value in zip(paths, found, strict=True):
        if isinstance(value, OSError) and value.errno == errno.EINVAL:  # empty: no range
            try:
                value = fs.cat_file(path)
            except OSError as err:
                value = err
        out[paths[path]] = value
    return out


def read_many(uris: Sequence[str]) -> dict[str, bytes]:
    """The objects of `uris` that exist, {uri: bytes}, fetched concurrently (`read_each`);
    a missing object is simply absent, any other failure raises `StorageError`."""
    out = {}
    for uri, value in read_each(uris).items():
        if isinstance(value, FileNotFoundError):
            continue
        if isinstance(value, BaseException):
            raise StorageError(f"cannot read {uri!r}: {value}") from value
        out[uri] = value
    return out


@_explained
def write_many(objects: Mapping[str, bytes]) -> None:
    """Write objects, each atomically (readers see the old object, the new one or none):
    renamed into place on a local disk, one PUT each (atomic by itself) on object stores,
    sent concurrently. Folders are made on a local disk only: on object stores that would
    create a bucket, so a mistyped output bucket fails instead."""
    if not objects:
        return
    _check_guards(objects)
    fs, _ = filesystem(next(iter(objects)))
    if isinstance(fs, LocalFileSystem):
        for uri, data in objects.items():
            path = filesystem(uri)[1]
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(tmp, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except OSError as err:
                raise StorageError(f"cannot write {uri!r}: {err}") from err
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        return
    try:
        fs.pipe({filesystem(uri)[1]: data for uri, data in objects.items()})
    except OSError as err:
        first = next(iter(objects))
        where = repr(first) if len(objects) == 1 else f"{len(objects)} objects under {first!r}"
        raise StorageError(f"cannot write {where}: {err}") from err


def is_transient(err: BaseException) -> bool:
    """True for failures a retry may fix — timeouts, dropped connections, throttling and
    5xx responses — anywhere in its `raise … from` chain; False for everything else
    (missing objects or buckets, access denied, missing credentials, bad data)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    network = (TimeoutError, ConnectionError, BotoConnectionError, HTTPClientError)
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, network):
            return True
        final = PermissionError | FileNotFoundError
        if (
            isinstance(seen, OSError)
            and not isinstance(seen, final)
            and seen.errno in TRANSIENT_ERRNOS
        ):
            return True
        seen = seen.__cause__
    return False
