"""The same flows against a real S3 server (moto, started here on 127.0.0.1)."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.compute as pc
import pytest

from tests.conftest import N_INCOMING, SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.s3, pytest.mark.usefixtures("prefect_harness")]


def test_fit_and_screen_on_s3(s3_endpoint, tiny_config, tiny_run) -> None:
    from s3fs import S3FileSystem

    from diffpath_flows.pipeline import RunOptions, fit_reference_flow, screen_flow

    bucket = "s3://diffpath-test"
    reference = fit_reference_flow(
        [f"{bucket}/data/reference.parquet"],
        f"{bucket}/runs/ref",
        tiny_config,
        holdout=0.5,
        run=tiny_run(max_images=60),
    )
    assert reference == f"{bucket}/runs/ref/reference.json"
    outputs = screen_flow(
        [f"{bucket}/data/incoming.parquet"],
        reference,
        f"{bucket}/runs/screen",
        run=RunOptions(shard_size=64),
    )
    fs = S3FileSystem()
    scores = pl.read_parquet(fs.open(outputs["scores"]))
    assert len(scores) == N_INCOMING and scores["score"].is_finite().all()
    summary = json.loads(fs.cat_file(outputs["summary"]))
    assert summary["n_scored"] == N_INCOMING
    assert summary["features_computed"] == N_INCOMING
    shards = fs.glob(f"{bucket}/runs/screen/shards/*/shard-*.parquet")
    assert len(shards) == -(-N_INCOMING // 64)
    key = f"{tiny_config.config_hash()}-{summary['model_id']}"
    segments = fs.glob(f"{bucket}/runs/screen/features/{key}/segments/*/*.parquet")
    assert len(segments) == len(shards)  # one write per shard
    rows = pl.concat(pl.read_parquet(fs.open(s)) for s in segments)
    assert rows["sha256"].sort().to_list() == scores["sha256"].unique().sort().to_list()
    again = screen_flow(
        [f"{bucket}/data/incoming.parquet"],
        reference,
        f"{bucket}/runs/screen-again",
        run=RunOptions(shard_size=64, features_root=f"{bucket}/runs/screen/features"),
    )
    assert json.loads(fs.cat_file(again["summary"]))["features_computed"] == 0
    assert not fs.glob(f"{bucket}/runs/**/.tmp-*")  # atomic writes left no temporaries


@pytest.mark.hostile(
    ("a mistyped output bucket", "fails at once; no bucket is created"),
)
def test_a_mistyped_output_bucket_fails_at_once_and_is_not_created(
    s3_endpoint, tiny_config, tiny_run
) -> None:
    from s3fs import S3FileSystem

    from diffpath.errors import StorageError
    from diffpath_flows.pipeline import fit_reference_flow

    with pytest.raises(StorageError, match="nobucket"):
        fit_reference_flow(
            ["s3://diffpath-test/data/reference.parquet"],
            "s3://nobucket/ref",
            tiny_config,
            run=tiny_run(max_images=10),
        )
    S3FileSystem.clear_instance_cache()
    assert "nobucket" not in S3FileSystem().ls("")


@pytest.fixture
def counted_s3(s3_endpoint, monkeypatch):
    """The session's moto S3 behind a second port of this process that counts requests by
    method, and answers 503 SlowDown under `flaky/` and 403 AccessDenied under `denied/`."""
    import threading
    from collections import Counter

    from moto.server import DomainDispatcherApplication, create_backend_app
    from s3fs import S3FileSystem
    from werkzeug.serving import make_server

    moto = DomainDispatcherApplication(create_backend_app)  # the same in-process buckets
    counts: Counter[str] = Counter()
    refusals = {
        "/flaky/": ("503 Slow Down", "SlowDown"),
        "/denied/": ("403 Forbidden", "AccessDenied"),
    }

    def app(environ, start_response):
        counts[environ["REQUEST_METHOD"]] += 1
        for folder, (status, code) in refusals.items():
            if folder in environ["PATH_INFO"]:
                body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
                body = b"" if environ["REQUEST_METHOD"] == "HEAD" else body
                headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
                start_response(status, headers)
                return [body]
        return moto(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    S3FileSystem.clear_instance_cache()
    yield counts
    server.shutdown()
    S3FileSystem.clear_instance_cache()


@pytest.mark.parametrize("client", ["native", "s3fs"])
def test_objects_and_image_files_are_read_with_one_get_each(counted_s3, client, monkeypatch):
    """A cache lookup and a shard's image files cost one GET per object, no HEAD, through
    either client (counted at the server)."""
    from diffpath.io.sources import ImageRef, read_refs
    from diffpath.io.storage import read_many, write_many

    monkeypatch.setenv("DIFFPATH_S3_CLIENT", client)
    uris = [f"s3://diffpath-test/one-get/{i}.jpg" for i in range(10)]
    write_many({uri: f"image {i}".encode() for i, uri in enumerate(uris)} | {uris[-1]: b""})
    counted_s3.clear()
    assert read_many(uris[:9])[uris[0]] == b"image 0"
    assert counted_s3 == {"GET": 9}
    counted_s3.clear()
    data = read_refs([ImageRef(uri, None, uri) for uri in uris])
    assert data[:9] == [f"image {i}".encode() for i in range(9)] and data[9] == b""
    assert counted_s3["GET"] <= 11 and counted_s3["HEAD"] <= 1  # only the empty file twice
    assert client == "s3fs" or counted_s3["HEAD"] == 0


def test_native_reads_give_what_s3fs_gives(counted_s3, monkeypatch) -> None:
    """Image files through the native client and through s3fs: the same bytes, the same
    one-line error rows (missing, refused, over the size limit), and a throttled object
    raises as transient (the shard is retried) through both."""
    from diffpath.errors import StorageError
    from diffpath.io import storage
    from diffpath.io.sources import ImageRef, read_refs

    monkeypatch.setenv("DIFFPATH_MAX_IMAGE_BYTES", "1000")
    base = "s3://diffpath-test/native"
    storage.write_many(
        {f"{base}/{i}.jpg": bytes([i]) * (100 * i) for i in range(12)} | {f"{base}/empty.jpg": b""}
    )
    names = [*(f"{i}.jpg" for i in range(12)), "empty.jpg", "missing.jpg", "denied/a.jpg"]
    refs = [ImageRef(f"{base}/{name}", None, name) for name in names]
    read = {}
    for client in ("native", "s3fs"):
        monkeypatch.setenv("DIFFPATH_S3_CLIENT", client)
        read[client] = read_refs(refs)
        with pytest.raises(StorageError, match="transient"):
            read_refs([*refs[:3], ImageRef(f"{base}/flaky/b.jpg", None, "b")])
    assert read["native"] == read["s3fs"]
    assert read["native"][5] == bytes([5]) * 500 and read["native"][12] == b""
    assert "over the 1,000-byte limit" in read["native"][11]
    assert "missing.jpg" in read["native"][13] and "denied/a.jpg" in read["native"][14]
    assert all("\n" not in read["native"][i] for i in (11, 13, 14))


def test_the_cache_costs_requests_per_segment_not_per_image(s3_endpoint) -> None:
    """A shard's 600 lookups and its write are a handful of requests, not 600."""
    from collections import Counter

    import numpy as np

    from diffpath.config import FeatureConfig
    from diffpath.features.cache import FeatureCache, compact_caches
    from diffpath.io.identity import content_hash
    from diffpath.io.storage import filesystem

    root = "s3://diffpath-test/segment-cache"
    cache = FeatureCache(root, FeatureConfig(method="diffpathv2"), "m")
    nights = [[content_hash(f"{n} {i}".encode()) for i in range(200)] for n in range(3)]
    fs = filesystem(root)[0]
    fs.connect()
    calls: Counter[str] = Counter()
    fs.s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    for n, night in enumerate(nights):
        cache.put({h: np.full(6, n, np.float32) for h in night}, f"shard-{n}")
    assert calls["PutObject"] == 3 + 1  # one segment each, and key.json once
    compact_caches(root)
    calls.clear()
    found = cache.get([h for night in nights for h in night], "shard-9")
    assert len(found.features) == 600 and found.segments == 3
    assert sum(calls.values()) <= 8, calls  # 2 listings, the index, 3 segments (+ a HEAD)


def test_a_folder_on_s3_lists_the_same_through_either_client(s3_endpoint, monkeypatch) -> None:
    """Image files, Parquet rows and files of neither kind in nested folders, a folder
    listed twice: the native listing's table is s3fs's, and s3fs's listings cache keeps no
    info dict per object after it."""
    from diffpath.io.sources import list_table
    from diffpath.io.storage import filesystem, write_many

    base = "s3://diffpath-test/listing"
    incoming = (SAMPLES / "incoming.parquet").read_bytes()
    write_many(
        {f"{base}/a/{i}.JPG": b"x" for i in range(3)}
        | {f"{base}/b/c.png": b"y", f"{base}/notes.txt": b"z", f"{base}/é/d.jpg": b"w"}
        | {f"{base}/rows.parquet": incoming}
    )
    tables = {}
    for client in ("native", "s3fs"):
        monkeypatch.setenv("DIFFPATH_S3_CLIENT", client)
        tables[client] = list_table([base, f"{base}/a/"])
    assert tables["native"].equals(tables["s3fs"])
    files = tables["native"].filter(pc.is_null(tables["native"]["row"]))
    assert files["path"].to_pylist() == ["a/0.JPG", "a/1.JPG", "a/2.JPG", "b/c.png", "é/d.jpg"]
    assert len(tables["native"]) == len(files) + N_INCOMING
    fs = filesystem(base)[0]
    assert not [key for key in fs.dircache if key.startswith("diffpath-test/listing")]
