"""Which S3 reads the native client takes, and how its failures read."""

from __future__ import annotations

import errno

import pytest
from s3fs import S3FileSystem

from diffpath.io import native
from diffpath.io.storage import is_transient


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(native.CLIENT_ENV, raising=False)


def test_plain_settings_go_native_with_the_same_endpoint_and_region(aws_env) -> None:
    target = native._target(S3FileSystem(skip_instance_cache=True), "bucket")
    assert target is not None and target.endpoint == "http://127.0.0.1:9"
    assert target.region == "eu-west-1" and native._store(target) is not None


@pytest.mark.parametrize(
    "options",
    [
        {"requester_pays": True},
        {"version_aware": True},
        {"s3_additional_kwargs": {"RequestPayer": "requester"}},
        {"client_kwargs": {"verify": False}},
        {"config_kwargs": {"s3": {"addressing_style": "virtual"}}},
    ],
)
def test_settings_only_s3fs_honours_stay_on_s3fs(aws_env, options) -> None:
    assert native._target(S3FileSystem(skip_instance_cache=True, **options), "bucket") is None


def test_the_switch_and_a_ca_bundle_over_tls_keep_s3fs(aws_env, monkeypatch) -> None:
    fs = S3FileSystem(skip_instance_cache=True)
    monkeypatch.setenv(native.CLIENT_ENV, "s3fs")
    assert native.read_each(fs, ["s3://bucket/a.jpg"], None) is None
    monkeypatch.delenv(native.CLIENT_ENV)
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert native._target(fs, "bucket") is not None  # plain http: no TLS to verify
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    assert native._target(fs, "bucket") is None


def test_aws_itself_without_a_region_stays_on_s3fs(aws_env, monkeypatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    target = native._target(S3FileSystem(skip_instance_cache=True), "bucket")
    assert target is not None and native._store(target) is None


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        ("500 Internal Server Error", True),
        ("503 Slow Down", True),
        ("429 Too Many Requests", True),
        ("400 Bad Request", False),
    ],
)
def test_failures_read_as_s3fs_failures(status, transient) -> None:
    err = Exception(
        f"Generic S3 error: Error performing GET http://h/b/k in 3ms - Server returned "
        f"non-2xx status code: {status}: <?xml?>\n<Error><Code>Nope</Code>"
        "<Message>no.</Message></Error>\n\nDebug source: ..."
    )
    out = native._as_oserror(err, "s3://b/k")
    assert str(out).endswith(f"s3://b/k: {status[:3]} Nope: no.") and "\n" not in str(out)
    assert is_transient(out) is transient and out.__cause__ is err


def test_a_lost_connection_is_transient_and_a_missing_key_is_not() -> None:
    lost = native._as_oserror(Exception("Generic S3 error: HTTP error: error sending request"), "u")
    assert is_transient(lost)
    missing = native._as_oserror(FileNotFoundError("Object at location k not found"), "u")
    assert isinstance(missing, FileNotFoundError) and missing.errno == errno.ENOENT
    assert not is_transient(missing)
