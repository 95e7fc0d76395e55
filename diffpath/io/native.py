"""Bulk GETs on S3 through obstore, a binding of Rust's `object_store`.

s3fs spends about 2.2 ms of CPU on each GET, so one process reads about 400 small objects a
second; obstore spends about 0.2 ms, so the same process reads thousands
(`benchmarks/scale.py reads`, docs/performance.md). It serves `storage.read_each` only, and
only where it reads exactly what s3fs would: the same endpoint, region and credentials
(botocore's chain: the environment, a profile, SSO, an instance role) and no s3fs option it
cannot honour. It also lists a source's folders page by page into Arrow strings
(`list_paths`), where s3fs's `find` would hold an info dict per object (~1 KB each, kept in
its listings cache). Writes, small listings and Parquet row groups stay with fsspec.
`DIFFPATH_S3_CLIENT=s3fs` turns it off.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["CLIENT_ENV", "IN_FLIGHT", "list_paths", "read_each"]

CLIENT_ENV = "DIFFPATH_S3_CLIENT"  # "s3fs": every read through s3fs
IN_FLIGHT = 128  # concurrent GETs per process: at 20 ms each, ~5,000 objects/s
ATTEMPTS = 3  # as botocore's adaptive mode; a shard that still fails is retried whole
# s3fs options (as the filesystem was made with them) whose meaning the native client
# reproduces; any other — requester_pays, version_aware, session, use_ssl, … — keeps s3fs
_OPTIONS = frozenset(
    {"key", "secret", "token", "anon", "endpoint_url", "client_kwargs", "config_kwargs", "profile"}
)
_CLIENT_KWARGS = frozenset({"endpoint_url", "region_name"})
_CONFIG_KWARGS = frozenset({"retries", "connect_timeout"})
_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass(frozen=True)
class _Target:
    """What decides which store serves a bucket: the bucket and s3fs's settings, with the
    environment variables botocore reads (a test or a user may change them mid-process)."""

    bucket: str
    endpoint: str | None
    region: str | None
    anon: bool
    key: str | None
    secret: str | None
    token: str | None
    profile: str | None
    connect_timeout: float
    environment: tuple[str | None, ...]


def _target(fs: Any, bucket: str) -> _Target | None:
    """The bucket's settings under s3fs `fs`, or None where they need s3fs itself."""
    if os.environ.get(CLIENT_ENV, "auto") == "s3fs":
        return None
    options = fs.storage_options
    if set(options) - _OPTIONS:
        return None
    if set(fs.client_kwargs) - _CLIENT_KWARGS or set(fs.config_kwargs) - _CONFIG_KWARGS:
        return None
    endpoint = (
        fs.endpoint_url
        or fs.client_kwargs.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if os.environ.get("AWS_CA_BUNDLE") and not (endpoint or "").startswith("http://"):
        return None  # TLS against a CA bundle of the user's: s3fs's verification
    region = (
        fs.client_kwargs.get("region_name")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    return _Target(
        bucket,
        endpoint,
        region,
        bool(fs.anon),
        fs.key,
        fs.secret,
        fs.token,
        fs.kwargs.get("profile"),
        float(fs.config_kwargs.get("connect_timeout", 10.0)),
        tuple(os.environ.get(name) for name in _ENV),
    )


@lru_cache(maxsize=64)
def _store(target: _Target) -> Any | None:
    """An obstore `S3Store` for the target, or None where botocore's configuration says
    something it cannot follow (an endpoint in a profile, no region for AWS itself) or
    finds no credentials (s3fs then reads, and says what is missing)."""
    import botocore.session
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError
    from obstore.store import S3Store

    try:
        session = botocore.session.Session(profile=target.profile)
        profile = session.get_scoped_config()
        credentials = None
        if not (target.anon or (target.key and target.secret)):
            credentials = session.get_credentials()
            if credentials is None:
                return None
    except BotoCoreError:
        return None
    if target.endpoint is None and {"endpoint_url", "services"} & set(profile):
        return None
    region = target.region or profile.get("region")
    if region is None:
        if target.endpoint is None:  # AWS itself: s3fs finds the bucket's region
            return None
        region = "us-east-1"  # botocore's own choice for a custom endpoint
    options: dict[str, Any] = {
        "region": region,
        "client_options": {
            "allow_http": (target.endpoint or "").startswith("http://"),
            "connect_timeout": timedelta(seconds=target.connect_timeout),
        },
        "retry_config": {"max_retries": ATTEMPTS - 1, "retry_timeout": timedelta(minutes=1)},
    }
    if target.endpoint:
        options["endpoint"] = target.endpoint
    if target.anon:
        options["skip_signature"] = True
    elif credentials is None:
        options |= {"access_key_id": target.key, "secret_access_key": target.secret}
        if target.token:
            options["token"] = target.token
    else:
        refreshed = isinstance(credentials, RefreshableCredentials)

        def provide() -> dict[str, Any]:
            frozen = credentials.get_frozen_credentials()
            renew = datetime.now(timezone.utc) + timedelta(minutes=5) if refreshed else None
            return {
                "access_key_id": frozen.access_key,
                "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "expires_at": renew,
            }

        options["credential_provider"] = provide
    return S3Store(target.bucket, **options)


_STATUS = re.compile(r"status code: (\d{3})")
_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")


def _as_oserror(err: Exception, uri: str) -> OSError:
    """obstore's failure as the `OSError` s3fs would give: FileNotFoundError,
    PermissionError, or an errno `storage.is_transient` reads (server errors, throttling,
    timeouts and lost connections are transient; other refusals are not)."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    text = str(err)
    status = _STATUS.search(text)
    fields = dict(_FIELD.findall(text))
    reason = (
        f"{status.group(1)} {fields.get('Code', '')}: {fields.get('Message', '')}".strip(": ")
        if status
        else text.splitlines()[0]
    )
    message = f"{uri}: {reason}"
    if isinstance(err, FileNotFoundError | NotFoundError):
        out: OSError = FileNotFoundError(errno.ENOENT, message)
    elif isinstance(err, PermissionError | PermissionDeniedError | UnauthenticatedError):
        out = PermissionError(errno.EACCES, message)
    else:
        code = int(status.group(1)) if status else None
        transient = code is None or code >= 500 or code in (408, 429)
        out = OSError(errno.EREMOTEIO if transient else errno.EIO, message)
    out.__cause__ = err
    return out


async def _get(store: Any, key: str, uri: str, max_bytes: int | None) -> bytes | OSError:
    """One object's bytes (its first `max_bytes`) in one GET; an empty object, whose range
    S3 refuses (416), in a second."""
    import obstore

    try:
        if max_bytes is not None:
            try:
                return bytes(await obstore.get_range_async(store, key, start=0, end=max_bytes))
            except Exception as err:
                if "status code: 416" not in str(err):
                    raise
        result = await obstore.get_async(store, key)
        return bytes(await result.bytes_async())
    except Exception as err:
        return _as_oserror(err, uri)


async def _gather(jobs: list[tuple[Any, str, str]], max_bytes: int | None) -> list:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(store: Any, key: str, uri: str) -> bytes | OSError:
        async with slots:
            return await _get(store, key, uri, max_bytes)

    return await asyncio.gather(*(one(*job) for job in jobs))


def _bucket_store(fs: fsspec.AbstractFileSystem, bucket: str) -> Any | None:
    """The store for `bucket` under s3fs `fs`; None where s3fs must serve it (not S3,
    obstore not installed, settings only s3fs honours)."""
    if "s3" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return None
    try:
        import obstore  # noqa: F401
    except ImportError:
        return None
    target = _target(fs, bucket)
    return _store(target) if target is not None else None


def list_paths(fs: fsspec.AbstractFileSystem, folder: str) -> pa.Array | None:
    """Every object under an S3 folder as `bucket/key` Arrow strings, a page of 1,000 at a
    time (one LIST each), unsorted; None where s3fs must list it."""
    import obstore

    bucket, _, prefix = fs._strip_protocol(folder).partition("/")
    store = _bucket_store(fs, bucket)
    if store is None:
        return None
    try:
        pages = [
            pa.array([meta["path"] for meta in page], pa.string())
            for page in obstore.list(store, prefix.strip("/") or None, chunk_size=1000)
        ]
    except Exception as err:
        raise _as_oserror(err, folder) from err
    keys = pa.concat_arrays(pages) if pages else pa.array([], pa.string())
    return pc.binary_join_element_wise(bucket, keys, "/")


def read_each(
    fs: fsspec.AbstractFileSystem, uris: Sequence[str], max_bytes: int | None
) -> dict[str, bytes | OSError] | None:
    """`storage.read_each` on S3 through obstore: each object's bytes (at most its first
    `max_bytes`) or the `OSError` s3fs would have raised for it, `IN_FLIGHT` GETs at a time;
    None where s3fs must read them."""
    jobs = []
    for uri in uris:
        bucket, _, key = fs._strip_protocol(uri).partition("/")
        store = _bucket_store(fs, bucket)
        if store is None:
            return None
        jobs.append((store, key, uri))
    found = fsspec.asyn.sync(fsspec.asyn.get_loop(), _gather, jobs, max_bytes)
    return dict(zip(uris, found, strict=True))
