"""Storage helpers: atomic writes, batched reads of small objects, the retry decision."""

from __future__ import annotations

import errno
import os

import botocore.exceptions
import pyarrow as pa
import pytest

from diffpath.errors import ConfigError, DecodeError, StorageError
from diffpath.io.storage import (
    is_transient,
    read_many,
    read_parquet,
    write_many,
    write_parquet,
)


def test_read_many_returns_what_exists(tmp_path) -> None:
    write_many({str(tmp_path / "a" / "1"): b"one", str(tmp_path / "b" / "2"): b"two"})
    found = read_many(
        [str(tmp_path / "a" / "1"), str(tmp_path / "b" / "2"), str(tmp_path / "none")]
    )
    assert found == {str(tmp_path / "a" / "1"): b"one", str(tmp_path / "b" / "2"): b"two"}
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_parquet_round_trip_with_metadata(tmp_path) -> None:
    uri = write_parquet(pa.table({"x": [1, 2]}), str(tmp_path / "t.parquet"), {"feature_key": "k"})
    table = read_parquet(uri)
    assert (
        table.column("x").to_pylist() == [1, 2]
        and b"feature_key" in table.schema.metadata[b"diffpath"]
    )
    with pytest.raises(StorageError, match="cannot read"):
        read_parquet(str(tmp_path / "missing.parquet"))


def wrapped(err: BaseException) -> StorageError:
    try:
        raise StorageError("cannot read s3://b/k") from err
    except StorageError as outer:
        return outer


@pytest.mark.parametrize(
    "err",
    [
        TimeoutError("read timed out"),
        ConnectionResetError("reset by peer"),
        OSError(errno.EBUSY, "SlowDown"),  # s3fs: throttling, 503
        OSError(errno.EREMOTEIO, "InternalError"),  # s3fs: 500
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=repr,
)
def test_transient_failures_are_retried(err) -> None:
    assert is_transient(err) and is_transient(wrapped(err))


@pytest.mark.parametrize(
    "err",
    [
        FileNotFoundError("NoSuchBucket"),
        PermissionError("AccessDenied"),
        botocore.exceptions.NoCredentialsError(),
        OSError(errno.EINVAL, "InvalidBucketName"),
        ConfigError("bad config"),
        DecodeError("not an image"),
        StorageError("source holds no images"),
        ValueError("does not exist"),
    ],
    ids=repr,
)
def test_permanent_failures_are_not_retried(err) -> None:
    assert not is_transient(err) and not is_transient(wrapped(err))


def test_task_retry_condition_uses_the_exception_type(tmp_path) -> None:
    from prefect.states import Completed, Failed

    from diffpath_tasks.retry import transient_failure

    assert transient_failure(None, None, Failed(data=TimeoutError("slow")))
    assert not transient_failure(None, None, Failed(data=PermissionError("AccessDenied")))
    assert not transient_failure(None, None, Completed(data=1))


@pytest.mark.hostile(
    (
        "fault: disk full while writing a cache object",
        "one line naming that object; no temporary file left",
    ),
)
def test_a_failed_write_names_its_object_and_leaves_no_temporary_file(tmp_path) -> None:
    from unittest import mock

    from diffpath.errors import StorageError
    from diffpath.io.storage import write_many

    objects = {str(tmp_path / "a" / name): b"x" * 10 for name in ("one", "two")}
    real_replace = os.replace

    def full_on_two(src, dst):
        if dst.endswith("two"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    with (
        mock.patch("os.replace", full_on_two),
        pytest.raises(StorageError, match=r"cannot write '.*/a/two': .*No space left"),
    ):
        write_many(objects)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["one"]


def test_s3_requests_retry_in_botocores_adaptive_mode_unless_told_otherwise(monkeypatch) -> None:
    from diffpath.io.storage import filesystem

    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    assert filesystem("s3://bucket/a")[0].config_kwargs["retries"] == {"mode": "adaptive"}
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    assert filesystem("s3://bucket/a")[0].config_kwargs["retries"] == {"mode": "standard"}
    assert not hasattr(filesystem("/tmp/a")[0], "config_kwargs")
