"""Object storage at scale, measured on a local S3 server with an injected per-request
latency (moto in its own process behind a middleware that sleeps and counts requests).

    python benchmarks/scale.py reads --files 2000 --latency 0.02

    python benchmarks/scale.py night --files 2000 --latency 0.02

`reads`: a shard of image files read through `read_refs` — concurrently (one ranged GET per
file, `storage.IN_FLIGHT` at a time) and, for comparison, one file after another as before —
reporting images/s and requests by kind per 1,000 images. On a 2-core machine the S3
stand-in itself (moto, single process) bounds the rate; the table says so.

`night`: the same files listed and featurized through the shard task's code (`store_listing`,
`featurize_shard`) with a tiny random UNet standing in for the model, so the storage
plumbing is what is measured: requests by kind per 1,000 images for a night of new images
and for its rerun (every feature from the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"


def serve(port: int, latency: float) -> None:
    """moto's S3 behind a WSGI middleware: every request waits `latency` seconds and is
    counted by method; GET /_counts returns the counts (and resets them)."""
    import threading

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    moto = DomainDispatcherApplication(create_backend_app)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/_counts":
            with lock:
                body = json.dumps(dict(counts)).encode()
                counts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with lock:
            counts[environ["REQUEST_METHOD"]] += 1
        time.sleep(latency)
        return moto(environ, start_response)

    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, __file__, "serve", "--port", str(port), "--latency", str(latency)]
    server = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/_counts")
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the S3 stand-in did not start")


def requests_since(endpoint: str) -> Counter[str]:
    return Counter(json.load(urllib.request.urlopen(f"{endpoint}/_counts")))


@contextmanager
def image_files(files: int, latency: float) -> Iterator[tuple[str, list[str]]]:
    """The S3 stand-in holding `files` distinct JPEG files under s3://scale/images/:
    (its endpoint, their paths)."""
    import pyarrow.parquet as pq
    from s3fs import S3FileSystem

    server, endpoint = start_server(latency)
    try:
        os.environ |= {
            "AWS_ACCESS_KEY_ID": "scale",
            "AWS_SECRET_ACCESS_KEY": "scale",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        fs = S3FileSystem(skip_instance_cache=True)
        fs.mkdir("scale")
        blobs = pq.read_table(SAMPLES / "incoming.parquet")["image"].to_pylist()
        # distinct bytes per file (a trailing counter after the JPEG's end), as in a real dump
        objects = {
            f"scale/images/{i:06d}.jpg": blobs[i % len(blobs)] + i.to_bytes(4, "little")
            for i in range(files)
        }
        fs.pipe(objects)
        requests_since(endpoint)
        yield endpoint, list(objects)
    finally:
        server.terminate()


def per_1000(counts: Counter[str], images: int) -> dict[str, int]:
    return {kind: round(1000 * n / images) for kind, n in sorted(counts.items())}


def reads(files: int, latency: float) -> dict[str, object]:
    from diffpath.io import storage
    from diffpath.io.sources import ImageRef, read_refs

    with image_files(files, latency) as (endpoint, paths):
        refs = [ImageRef(f"s3://{path}", None, path) for path in paths]
        rows = {}
        for name, in_flight in (("concurrent", storage.IN_FLIGHT), ("one by one", 1)):
            storage.IN_FLIGHT = in_flight
            start = time.perf_counter()
            data = read_refs(refs)
            seconds = time.perf_counter() - start
            assert all(isinstance(d, bytes) for d in data)
            rows[name] = {
                "in_flight": in_flight,
                "images_per_s": round(files / seconds),
                "requests_per_1000_images": per_1000(requests_since(endpoint), files),
            }
        return {"files": files, "latency_s": latency, "cpus": os.cpu_count(), "reads": rows}


def tiny_model():
    """A random 2-level UNet through `DiffusionModel`: the model's cost out of the way."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from diffpath.model.diffusion import DiffusionModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    schedule = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    return DiffusionModel(unet, schedule, model_id="scale-stand-in")


def night(files: int, latency: float) -> dict[str, object]:
    from diffpath.config import FeatureConfig
    from diffpath.features.shards import featurize_shard
    from diffpath.io.sources import store_listing

    model, config = tiny_model(), FeatureConfig(method="diffpathv2", timesteps=2)
    with image_files(files, latency) as (endpoint, _):
        rows = {}
        for name in ("new images", "rerun (all cached)"):
            start = time.perf_counter()
            listing = store_listing(["s3://scale/images/"], "s3://scale/run", 2048, None, 0)
            counts = [
                featurize_shard(model, listing, i, config, "s3://scale/cache", "s3://scale/run")
                for i in range(listing.n_shards)
            ]
            seconds = time.perf_counter() - start
            rows[name] = {
                "images_per_s": round(files / seconds),
                "computed": sum(c.n_computed for c in counts),
                "from_cache": sum(c.n_cached for c in counts),
                "requests_per_1000_images": per_1000(requests_since(endpoint), files),
            }
        return {"files": files, "latency_s": latency, "night": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("reads", "image files read"), ("night", "a night through the shards")):
        run = commands.add_parser(name, help=f"{text}, from S3 at a given latency")
        run.add_argument("--files", type=int, default=2000)
        run.add_argument("--latency", type=float, default=0.02)
        run.add_argument("--json", type=Path)
    stand_in = commands.add_parser("serve", help="(internal) the latency S3 stand-in")
    stand_in.add_argument("--port", type=int, required=True)
    stand_in.add_argument("--latency", type=float, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.latency)
        return
    result = {"reads": reads, "night": night}[args.command](args.files, args.latency)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
