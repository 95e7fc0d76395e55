"""Object storage at scale, measured on a local S3 server with an injected per-request
latency (`s3_stand_in.py`: moto in its own process behind a middleware that sleeps and
counts requests by method and top-level folder).

    python benchmarks/scale.py reads --files 2000 --latency 0.02

    python benchmarks/scale.py night --rows 100000 --files 10000 --latency 0.02

`reads`: a shard of image files read through `read_refs` by each S3 client — s3fs and the
native one (`diffpath.io.native`, obstore) — from moto (real S3 behaviour, its own rate the
ceiling) and from nginx (`s3_stand_in.Nginx`: its CPU per request is measured and its
ceiling printed, far above the clients'), reporting images/s, the client's CPU per image
and requests by kind per 1,000 images.

`night`: three nights through the screen flow's own feature steps on Prefect (listing,
cache compaction, one shard task per 2,048 images) with a tiny random UNet standing in for
the model, so the plumbing is what is measured: a night of new images (Parquet rows and
files), its rerun (every feature from the cache), and a next night sharing 90% of its
bytes. Per night: wall time, images/s per worker, Prefect's overhead per shard, resident
memory through the run (flow and worker are one process on the threads runner), and
requests by kind per 1,000 images, with the cache's writes per 1,000 new images and reads
per 100 looked up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow
from s3_stand_in import Nginx, requests_since, start_server

from diffpath.config import FeatureConfig
from diffpath_flows.pipeline import RUNNER, RunOptions, submit_shards
from diffpath_tasks.sources import list_images

SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"


def s3_environment(endpoint: str) -> None:
    """Point this process's S3 clients (s3fs and the native one) at a stand-in."""
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
    os.environ |= {
        "AWS_ACCESS_KEY_ID": "scale",
        "AWS_SECRET_ACCESS_KEY": "scale",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


@contextmanager
def stand_in(latency: float) -> Iterator[str]:
    """moto with an empty bucket `scale`, set as this process's S3: its endpoint."""
    from s3fs import S3FileSystem

    server, endpoint = start_server(latency)
    try:
        s3_environment(endpoint)
        S3FileSystem(skip_instance_cache=True).mkdir("scale")
        yield endpoint
    finally:
        server.terminate()


@contextmanager
def image_files(files: int, latency: float) -> Iterator[tuple[str, list[str]]]:
    """moto holding `files` distinct JPEG files under s3://scale/images/: (its endpoint,
    their paths)."""
    from s3fs import S3FileSystem

    with stand_in(latency) as endpoint:
        objects = image_blobs(files)
        S3FileSystem(skip_instance_cache=True).pipe(objects)
        requests_since(endpoint)
        yield endpoint, list(objects)


@contextmanager
def nginx_files(objects: dict[str, bytes], latency: float, folder: str) -> Iterator[Nginx]:
    """nginx serving `objects` ({`bucket/key`: bytes}) from `folder`, set as this
    process's S3."""
    for path, data in objects.items():
        (Path(folder) / "root" / path).parent.mkdir(parents=True, exist_ok=True)
        (Path(folder) / "root" / path).write_bytes(data)
    server = Nginx(folder, latency)
    try:
        s3_environment(server.endpoint)
        yield server
    finally:
        server.stop()


def per_1000(counts: Counter[str], images: int) -> dict[str, float]:
    return {kind: round(1000 * n / images, 2) for kind, n in sorted(counts.items())}


def image_blobs(files: int) -> dict[str, bytes]:
    """`files` distinct JPEG files, {`scale/images/NNNNNN.jpg`: bytes}: the samples with a
    counter after the JPEG's end, as in a real dump."""
    import pyarrow.parquet as pq

    blobs = pq.read_table(SAMPLES / "incoming.parquet")["image"].to_pylist()
    return {
        f"scale/images/{i:06d}.jpg": blobs[i % len(blobs)] + i.to_bytes(4, "little")
        for i in range(files)
    }


def read_rate(
    refs: list, requests: Callable[[], Counter[str]], client: str, in_flight: int, server=None
) -> dict[str, object]:
    """Read `refs` through `read_refs` with one client (`native` or `s3fs`), `in_flight`
    requests at a time: images/s, this process's CPU per image (all its threads), requests
    by kind per 1,000 images, and the stand-in's own CPU per request where it is measured."""
    from diffpath.io import native, storage
    from diffpath.io.sources import read_refs

    os.environ[native.CLIENT_ENV] = client
    native.IN_FLIGHT = storage.IN_FLIGHT = in_flight
    server_cpu = server.cpu_seconds() if server else 0.0
    start, cpu = time.perf_counter(), time.process_time()
    data = read_refs(refs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(isinstance(d, bytes) for d in data)
    row = {
        "images_per_s": round(len(refs) / seconds),
        "client_cpu_us_per_image": round(1e6 * cpu / len(refs)),
        "requests_per_1000_images": per_1000(requests(), len(refs)),
    }
    if server:
        per_request = (server.cpu_seconds() - server_cpu) / len(refs)
        row["stand_in_cpu_us_per_request"] = round(1e6 * per_request)
        row["stand_in_ceiling_per_s"] = round(1 / per_request) if per_request else None
    return row


def reads(files: int, latency: float) -> dict[str, object]:
    """Image files read by both clients from moto (real S3 behaviour; its own rate is the
    ceiling) and from nginx (the client's rate shows; its ceiling is printed)."""
    import tempfile

    from diffpath.io import native, storage
    from diffpath.io.sources import ImageRef

    defaults, rows = (native.IN_FLIGHT, storage.IN_FLIGHT), {}
    with image_files(files, latency) as (endpoint, paths):
        refs = [ImageRef(f"s3://{path}", None, path) for path in paths]
        for client, in_flight in (("s3fs", storage.IN_FLIGHT), ("native", native.IN_FLIGHT)):
            rows[f"moto, {client}, {in_flight} in flight"] = read_rate(
                refs, lambda: requests_since(endpoint), client, in_flight
            )
    objects = image_blobs(files)
    refs = [ImageRef(f"s3://{path}", None, path) for path in objects]
    with tempfile.TemporaryDirectory() as folder, nginx_files(objects, latency, folder) as server:
        for client, in_flight in (("s3fs", 64), ("native", 64), ("native", 128), ("native", 256)):
            rows[f"nginx, {client}, {in_flight} in flight"] = read_rate(
                refs, server.requests_since, client, in_flight, server
            )
    native.IN_FLIGHT, storage.IN_FLIGHT = defaults
    os.environ.pop(native.CLIENT_ENV)
    return {"files": files, "latency_s": latency, "cpus": os.cpu_count(), "reads": rows}


def stand_in_model(folder: Path) -> str:
    """A random 2-level UNet saved as a model folder: the model's cost out of the way, the
    same loading, fingerprint and feature code as a real one."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(
        sample_size=32,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).save_pretrained(folder)
    DDPMScheduler(num_train_timesteps=1000).save_config(folder)
    return str(folder)


def put_night(fs, prefix: str, rows: int, files: int, changed: float, blobs: list[bytes]) -> None:
    """Under s3://scale/<prefix>/: `rows` images in Parquet parts of 10,000 rows and `files`
    JPEG files, the same bytes every night but for a fraction `changed` spread evenly over
    them (every shard has some new images: the most cache writes per new image)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def image(i: int, fresh: bool) -> bytes:  # distinct bytes: a counter after the JPEG's end
        return blobs[i % len(blobs)] + i.to_bytes(5, "little") + bytes([fresh])

    every = round(1 / changed) if changed else 0

    def new(i: int) -> bool:
        return bool(every) and i % every == every - 1

    for start in range(0, rows, 10_000):
        ids = range(start, min(rows, start + 10_000))
        cells = [image(i, new(i)) for i in ids]
        buffer = io.BytesIO()
        pq.write_table(pa.table({"image": cells}), buffer, row_group_size=1024)
        fs.pipe_file(f"scale/{prefix}/rows/part-{start // 10_000:04d}.parquet", buffer.getvalue())
    fs.pipe({f"scale/{prefix}/files/{i:07d}.jpg": image(rows + i, new(i)) for i in range(files)})


class Memory:
    """This process's resident memory, sampled every `interval` seconds while it runs."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.samples: list[float] = []
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            with open("/proc/self/status") as status:
                line = next(line for line in status if line.startswith("VmRSS"))
            self.samples.append(int(line.split()[1]) / 1024)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, int]:
        """Peak, and the resident memory at each quarter of the run (flat = no growth)."""
        at = {
            f"at {q}%": round(self.samples[len(self.samples) * q // 100 - 1])
            for q in (25, 50, 75, 100)
        }
        return {"peak": round(max(self.samples)), **at}


@flow(name="scale-night", task_runner=RUNNER)
def features_night(
    source: list[str], out: str, config: FeatureConfig, model: str, shard_size: int
) -> dict:
    """One night's features as the screen flow computes them, timed step by step."""
    start = time.perf_counter()
    listing = list_images(source, out, shard_size, None, config.seed)
    listed = time.perf_counter()
    run = RunOptions(model=model, shard_size=shard_size, features_root="s3://scale/cache")
    shards = [future.result() for future in submit_shards(listing, config, out, run)]
    end = time.perf_counter()
    inside = sum(s.seconds for s in shards)
    return {
        "images": listing.n_images,
        "shards": len(shards),
        "listing_s": round(listed - start, 1),
        "shards_s": round(end - listed, 1),
        "images_per_s_per_worker": round(listing.n_images / inside),
        "prefect_overhead_per_shard_s": round((end - listed - inside) / len(shards), 3),
        "computed": sum(s.n_computed for s in shards),
        "from_cache": sum(s.n_cached for s in shards),
    }


def night(rows: int, files: int, latency: float, shard_size: int) -> dict[str, object]:
    """A new night, its rerun and a next night sharing 90% of its bytes, each through the
    features of the screen flow (listing, compaction, shard tasks) on Prefect's threads."""
    import tempfile

    import pyarrow.parquet as pq
    from s3fs import S3FileSystem

    blobs = pq.read_table(SAMPLES / "incoming.parquet")["image"].to_pylist()
    with tempfile.TemporaryDirectory() as folder, stand_in(latency) as endpoint:
        fs = S3FileSystem(skip_instance_cache=True)
        put_night(fs, "night-1", rows, files, 0.0, blobs)
        put_night(fs, "night-2", rows, files, 0.1, blobs)
        requests_since(endpoint)
        model = stand_in_model(Path(folder))
        config = FeatureConfig(method="diffpathv2", timesteps=2)
        results = {}
        for name, night_prefix in (
            ("new", "night-1"),
            ("rerun", "night-1"),
            ("next night, 90% shared", "night-2"),
        ):
            source = [f"s3://scale/{night_prefix}/rows/", f"s3://scale/{night_prefix}/files/"]
            with Memory() as memory:
                start = time.perf_counter()
                out = f"s3://scale/out/{len(results)}"
                row = features_night(source, out, config, model, shard_size)
                wall = time.perf_counter() - start
            counts = requests_since(endpoint)
            results[name] = {
                **row,
                "wall_s": round(wall, 1),
                "prefect_overhead_pct": round(
                    100 * row["prefect_overhead_per_shard_s"] * row["shards"] / wall, 1
                ),
                "rss_mb": memory.summary(),
                "requests": dict(sorted(counts.items())),
                "requests_per_1000_images": per_1000(counts, row["images"]),
                "cache_writes_per_1000_new": round(
                    1000 * counts.get("PUT cache", 0) / row["computed"], 2
                )
                if row["computed"]
                else None,
                "cache_reads_per_100_looked_up": round(
                    100
                    * sum(counts[f"{m} cache"] for m in ("GET", "HEAD", "LIST"))
                    / row["images"],
                    3,
                ),
            }
        return {
            "rows": rows,
            "files": files,
            "latency_s": latency,
            "shard_size": shard_size,
            "cpus": os.cpu_count(),
            "nights": results,
        }


def listing(rows: int, files: int, client: str, latency: float) -> dict[str, object]:
    """The listing step alone (`store_listing`) over `rows` Parquet rows (in parts of
    100,000) and `files` image files, listed by `client` (native or s3fs): its time, and
    this process's memory above what it held before, at the peak and once it has
    returned (what stays held)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from s3fs import S3FileSystem

    from diffpath.io.native import CLIENT_ENV
    from diffpath.io.sources import store_listing

    with stand_in(latency) as endpoint:
        fs = S3FileSystem(skip_instance_cache=True)
        for start in range(0, rows, 100_000):
            n = min(rows, start + 100_000) - start
            table = pa.table(
                {"image": [b"x"] * n, "path": [f"dump/{start + i:09d}.jpg" for i in range(n)]}
            )
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            fs.pipe_file(f"scale/listing/part-{start // 100_000:04d}.parquet", buffer.getvalue())
        for start in range(0, files, 10_000):
            names = range(start, min(files, start + 10_000))
            fs.pipe({f"scale/listing/files/{i // 1000:05d}/{i:09d}.jpg": b"x" for i in names})
        requests_since(endpoint)
        os.environ[CLIENT_ENV] = client
        with Memory(interval=0.005) as memory:  # a listing's peaks last milliseconds
            time.sleep(1)
            before = memory.samples[-1]
            start = time.perf_counter()
            stored = store_listing(["s3://scale/listing/"], "s3://scale/out", 2048, None, 0)
            seconds = time.perf_counter() - start
            time.sleep(1)
            held = memory.samples[-1] - before
        peak = max(memory.samples) - before
        return {
            "rows": rows,
            "files": files,
            "client": client,
            "listed": stored.n_images,
            "seconds": round(seconds, 1),
            "memory_mb_above_baseline": {"peak": round(peak), "held after": round(held)},
            "bytes_per_image": {
                "peak": round(peak * 2**20 / stored.n_images),
                "held after": round(held * 2**20 / stored.n_images),
            },
            "requests": dict(requests_since(endpoint)),
        }


def paced_model(ms_per_image: float, config: FeatureConfig):
    """A stand-in model that takes `ms_per_image` per image (the UNet's calls sleep, as a
    GPU's wait for its kernels does, the GIL free) and predicts zero noise."""
    import torch

    from diffpath.model.diffusion import DiffusionModel

    seconds_per_row = ms_per_image / 1000 / config.unet_evals

    class Paced(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            time.sleep(seconds_per_row * len(x))
            return torch.zeros_like(x)

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return DiffusionModel(Paced(), torch.cumprod(1 - betas, 0), model_id=f"paced-{ms_per_image}")


def overlap(files: int, shard_size: int, latency: float, ms_per_image: float) -> dict:
    """Shards of image files on S3 (listed on moto, read from nginx with the shipped
    client) featurized one after another on a stand-in model of a set speed: reading
    alone, the model alone, and both without and with the next shard read ahead
    (`featurize_shard(prefetch=True)`), each on a fresh cache."""
    import tempfile

    from s3fs import S3FileSystem

    from diffpath.features.shards import compute_shard, featurize_shard
    from diffpath.io.sources import read_listing, read_refs, store_listing

    config = FeatureConfig(method="diffpathv2", timesteps=3, draws=1)
    model = paced_model(ms_per_image, config)
    rows: dict[str, object] = {}
    objects = image_blobs(files)
    with tempfile.TemporaryDirectory() as work:
        with stand_in(0.0):  # moto lists them (nginx cannot)
            S3FileSystem(skip_instance_cache=True).pipe(objects)
            listing = store_listing(["s3://scale/images/"], work, shard_size, None, 0)
        with nginx_files(objects, latency, work) as server:
            shards = [read_listing(listing.uri, i) for i in range(listing.n_shards)]
            start = time.perf_counter()
            contents = [read_refs(refs) for refs in shards]
            rows["read alone"] = time.perf_counter() - start
            start = time.perf_counter()
            for refs, data in zip(shards, contents, strict=True):
                compute_shard(model, refs, config, f"{work}/model-alone", contents=data)
            rows["model alone"] = time.perf_counter() - start
            server.requests_since()
            for prefetch in (False, True):
                start = time.perf_counter()
                for i in range(listing.n_shards):
                    cache = f"{work}/cache-{prefetch}"
                    featurize_shard(model, listing, i, config, cache, work, prefetch=prefetch)
                name = "read ahead" if prefetch else "one after another"
                rows[name] = time.perf_counter() - start
                counts = server.requests_since()
                rows[f"GETs per image, {name}"] = counts["GET images"] / files
                rows[f"HEADs per image, {name}"] = counts["HEAD images"] / files
    seconds = {k: round(v, 2) for k, v in rows.items()}
    return {
        "files": files,
        "shards": listing.n_shards,
        "latency_s": latency,
        "ms_per_image": ms_per_image,
        "seconds": seconds,
        "sum of read and model": round(rows["read alone"] + rows["model alone"], 2),
        "max of read and model": round(max(rows["read alone"], rows["model alone"]), 2),
    }


PRICES = {"PUT": 0.005, "POST": 0.005, "LIST": 0.005, "GET": 0.0004, "HEAD": 0.0004}
"""S3 Standard list prices per 1,000 requests (us-east-1; DELETE is free)."""


def extrapolate(
    measured: dict, images: int, gpus: list[int], gpu_rate: float, gpu_price: float
) -> str:
    """A Markdown table: requests, dollars and hours of a night of `images` JPEG files, from
    a `night` measurement: image reads per file (1 GET, a LIST per 1,000), cache and output
    requests per shard as measured, GPU time at `gpu_rate` images/s per GPU."""
    lines = [
        f"| night of {images:,} files | image reads | cache reads | cache writes | outputs "
        "| requests $ | GPU-hours | GPU $ | " + " | ".join(f"wall, {g} GPU" for g in gpus) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(gpus),
    ]
    shards = -(-images // measured["shard_size"])
    for name, night in measured["nights"].items():
        counts = Counter({"GET images": images, "LIST images": images / 1000})
        for kind, n in night["requests"].items():
            method, folder = kind.split(" ", 1)
            if not folder.startswith("night-"):  # the cache's and the outputs' requests
                where = "cache" if folder == "cache" else "outputs"
                counts[f"{method} {where}"] += n / night["shards"] * shards
        dollars = sum(PRICES[kind.split()[0]] * n / 1000 for kind, n in counts.items())
        cache_reads = sum(counts[f"{m} cache"] for m in ("GET", "HEAD", "LIST"))
        outputs = sum(n for kind, n in counts.items() if kind.endswith("outputs"))
        hours = images * night["computed"] / night["images"] / gpu_rate / 3600
        lines.append(
            f"| {name} | {images * 1.001:,.0f} | {cache_reads:,.0f} | {counts['PUT cache']:,.0f} "
            f"| {outputs:,.0f} | {dollars:.2f} | {hours:.2f} | {hours * gpu_price:.2f} | "
            + " | ".join(f"{60 * hours / g:.0f} min" for g in gpus)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reading = commands.add_parser("reads", help="image files read from S3 at a latency")
    reading.add_argument("--files", type=int, default=2000)
    nightly = commands.add_parser("night", help="three nights through the screen's features")
    nightly.add_argument("--rows", type=int, default=100_000, help="images in Parquet")
    nightly.add_argument("--files", type=int, default=10_000, help="images as files")
    nightly.add_argument("--shard-size", type=int, default=2048)
    lister = commands.add_parser("listing", help="the listing step's time and memory")
    lister.add_argument("--rows", type=int, default=1_000_000, help="images in Parquet")
    lister.add_argument("--files", type=int, default=0, help="images as files")
    lister.add_argument("--client", choices=["native", "s3fs"], default="native")
    overlapping = commands.add_parser("overlap", help="reads overlapped with a paced model")
    overlapping.add_argument("--files", type=int, default=2048)
    overlapping.add_argument("--shard-size", type=int, default=512)
    overlapping.add_argument("--ms-per-image", type=float, default=3.0)
    for command in (reading, nightly, lister, overlapping):
        command.add_argument("--latency", type=float, default=0.02, help="seconds per request")
        command.add_argument("--json", type=Path)
    projection = commands.add_parser("extrapolate", help="a night's measurement scaled up")
    projection.add_argument("measured", type=Path, help="the JSON of `night --json`")
    projection.add_argument("--images", type=int, default=10_000_000)
    projection.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    projection.add_argument("--gpu-rate", type=float, default=1493, help="images/s per GPU")
    projection.add_argument("--gpu-price", type=float, default=3.0, help="$ per GPU-hour")
    args = parser.parse_args()
    if args.command == "extrapolate":
        measured = json.loads(args.measured.read_text())
        print(extrapolate(measured, args.images, args.gpus, args.gpu_rate, args.gpu_price))
        return
    if args.command == "listing":
        result = listing(args.rows, args.files, args.client, args.latency)
    elif args.command == "reads":
        result = reads(args.files, args.latency)
    elif args.command == "overlap":
        result = overlap(args.files, args.shard_size, args.latency, args.ms_per_image)
    else:
        result = night(args.rows, args.files, args.latency, args.shard_size)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
