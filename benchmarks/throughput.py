"""Throughput of the feature path, every figure a ratio to the UNet's own ceiling measured in
the same run: one table, printed and saved as JSON.

    python benchmarks/throughput.py --device cuda --json throughput.json
    python benchmarks/throughput.py --quick              # a CPU: small sizes, minutes

Rows per model (the bundled one; a UNet of the google/ddpm-cifar10-32 shape, random weights):
- ceiling: UNet forward only, random inputs already on the device, best rows per call;
- features: DiffPathV2 features of decoded images (host tensors), images/s × K ÷ ceiling;
- baseline: DiffPath-6D (sequential DDIM, K UNet evaluations per image), the same ratio;
- decode: JPEG/PNG bytes → tensors on the decode threads alone (what feeds the model);
- pipeline: a Parquet of JPEG/PNG bytes → feature-shard Parquet through the shard task's
  code (listing, row-group reads, hashing, cache lookup, threaded decode, model, cache and
  shard writes); with Prefect installed, also through the flow and its task runner;
- memory: peak resident (and GPU) memory of the pipeline at growing image counts, each in a
  fresh process: flat when nothing grows with the input.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from diffpath.config import FeatureConfig
from diffpath.features.extract import extract_features
from diffpath.features.shards import featurize_shard
from diffpath.io.images import decode_batches
from diffpath.io.sources import list_source, load_images, read_refs, store_listing
from diffpath.model.diffusion import DiffusionModel, load_model

SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(kind: str, device: str, dtype: torch.dtype) -> DiffusionModel:
    """The bundled model, or a random UNet of the google/ddpm-cifar10-32 shape (35.7M)."""
    if kind == "default":
        return load_model("default", device=device, dtype=dtype)
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ).to(device)
    if unet.device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    schedule = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    return DiffusionModel(
        unet.eval().requires_grad_(False), schedule, kind, torch.device(device), dtype
    )


def images_parquet(n: int, path: Path, data: Path | None) -> Path:
    """A Parquet source of n distinct images: the first n rows of `data` (real images) when
    it has that many, else synthetic ones."""
    if data is not None and pq.read_metadata(data).num_rows >= n:
        table = pq.read_table(data, columns=["image", "path"]).slice(0, n)
        pq.write_table(table, path, row_group_size=512)
        return path
    return synthetic_parquet(n, path)


def synthetic_parquet(n: int, path: Path) -> Path:
    """n distinct real-looking 32×32 images (bundled samples, shifted and flipped), JPEG and
    PNG alternately, as a Parquet source with 512-row groups."""
    refs = list_source([str(SAMPLES / "reference.parquet"), str(SAMPLES / "incoming.parquet")])
    bases = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in read_refs(refs)]
    images = []
    for i in range(n):
        base, shift = bases[i % len(bases)], i // len(bases)
        pixels = np.roll(base, (shift % 32, (shift // 32) % 32), axis=(0, 1))
        if (shift // 1024) % 2:
            pixels = pixels[:, ::-1]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(
            buffer, format="JPEG" if i % 2 else "PNG", quality=90
        )
        images.append(buffer.getvalue())
    table = pa.table({"image": images, "path": [f"img/{i:07d}" for i in range(n)]})
    pq.write_table(table, path, row_group_size=512)
    return path


def timed(fn, device: torch.device, min_seconds: float) -> float:
    """Seconds per call of fn(), after one warm-up, averaged over >= min_seconds."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def ceiling(model: DiffusionModel, chunks: list[int], min_seconds: float) -> tuple[float, int]:
    """Best UNet evaluations/s over rows-per-call `chunks` (inputs already on the device)."""
    best = (0.0, 0)
    for chunk in chunks:
        x = torch.randn(chunk, 3, 32, 32, device=model.device)
        t = torch.randint(0, model.num_train_timesteps, (chunk,), device=model.device)
        rate = chunk / timed(lambda x=x, t=t: model.predict_noise(x, t), model.device, min_seconds)
        print(f"  ceiling {chunk:6d} rows/call: {rate:10.0f} evals/s", flush=True)
        best = max(best, (rate, chunk))
    return best


def rss_mb() -> float:
    """Peak resident memory of this process since start, or since `reset_peak_rss`."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start measuring the peak anew (Linux: writing 5 to clear_refs resets VmHWM)."""
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        clear.write_text("5")


def pipeline_core(
    model: DiffusionModel, source: Path, config: FeatureConfig, work: Path, in_flight: int = 1
) -> float:
    """Seconds for listing → shards → feature Parquet through the shard task's own code,
    `in_flight` shards at a time on one model (one's I/O overlaps another's model calls)."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    listing = store_listing([str(source)], str(work), 2048, None, 0)
    with ThreadPoolExecutor(in_flight) as pool:
        shards = [
            pool.submit(featurize_shard, model, listing, i, config, str(work / "cache"), str(work))
            for i in range(listing.n_shards)
        ]
        [shard.result() for shard in shards]
    sync(model.device)
    return time.perf_counter() - start


def pipeline_flow(source: Path, config: FeatureConfig, device: str, work: Path) -> float:
    """Seconds for the same through the Prefect flow and its task runner (server warm)."""
    from prefect import flow

    from diffpath_flows.pipeline import RunOptions, featurize

    @flow
    def run(out: str) -> None:
        featurize([str(source)], config, out, RunOptions(device=device))

    run(str(work / "warm-up"))  # starts the ephemeral server, loads the model
    start = time.perf_counter()
    run(str(work / "timed"))
    return time.perf_counter() - start


def memory_child(source: Path, kind: str, device: str, dtype: str) -> None:
    """Run the core pipeline on a source in this process; print its peak memory as JSON."""
    n = pq.read_metadata(source).num_rows
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(kind, device, getattr(torch, dtype))
        config = FeatureConfig(dtype=dtype)
        baseline = rss_mb()
        reset_peak_rss()
        seconds = pipeline_core(model, source, config, Path(tmp) / "run")
        gpu = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None
        print(
            json.dumps(
                {
                    "n": n,
                    "rss_mb": rss_mb(),
                    "rss_before_mb": baseline,
                    "gpu_mb": gpu,
                    "seconds": seconds,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=["default", "cifar10-32"])
    parser.add_argument(
        "--dtypes", nargs="*", default=None, help="default: float32 (+bfloat16 on CUDA)"
    )
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--images", type=int, default=None, help="features/pipeline images")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=None)
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU")
    parser.add_argument(
        "--data", type=Path, default=None, help="Parquet of real images (else synthetic ones)"
    )
    parser.add_argument("--json", type=Path, default=Path("throughput.json"))
    parser.add_argument(
        "--compile", action="store_true", help="also the ceiling of torch.compile'd UNets"
    )
    parser.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtypes = args.dtypes or (["float32", "bfloat16"] if cuda else ["float32"])
    if args.memory_child is not None:
        return memory_child(args.memory_child, args.models[0], args.device, dtypes[-1])
    quick = args.quick or not cuda
    n_images = args.images or (64 if quick else 16384)
    sizes = args.memory_sizes or ([100, 400, 1000] if quick else [2000, 10000, 50000])
    chunks = [16, 32, 64, 128] if not cuda else [512, 1024, 2048, 4096, 8192, 16384]
    min_seconds = 2.0 if not cuda else 1.0
    k = args.timesteps
    machine = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    header = {
        "machine": machine,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "timesteps": k,
        "images": n_images,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(header), flush=True)
    rows: list[dict] = []

    def row(
        model: str,
        dtype: str,
        stage: str,
        images_s: float | None,
        evals_s: float,
        ratio: float | None,
        note: str = "",
    ) -> None:
        rows.append(
            {
                "model": model,
                "dtype": dtype,
                "stage": stage,
                "images_per_s": images_s,
                "unet_evals_per_s": evals_s,
                "ratio_to_ceiling": ratio,
                "note": note,
            }
        )
        print(
            f"{model:11s} {dtype:9s} {stage:18s} "
            f"{'' if images_s is None else f'{images_s:10.1f} img/s'} "
            f"{evals_s:12.0f} evals/s  {'' if ratio is None else f'{ratio:5.2f}x'}  {note}",
            flush=True,
        )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = images_parquet(n_images, tmp / "images.parquet", args.data)
        items = [(str(i), b) for i, b in enumerate(read_refs(list_source(str(source))))]
        start = time.perf_counter()
        decoded = sum(len(b[1]) for b in decode_batches(items, 512))
        decode_rate = decoded / (time.perf_counter() - start)
        row("-", "-", "decode (threads)", decode_rate, 0, None, f"{decoded} images")
        x, ids, _ = load_images(list_source(str(source)))
        for kind in args.models:
            for dtype in dtypes:
                model = build_model(kind, args.device, getattr(torch, dtype))
                params = sum(p.numel() for p in model.unet.parameters()) / 1e6
                name = f"{kind}"
                top, chunk = ceiling(
                    model, chunks if kind == "default" else chunks[:4], min_seconds
                )
                row(
                    name,
                    dtype,
                    "ceiling",
                    None,
                    top,
                    1.0,
                    f"{params:.1f}M params, {chunk} rows/call",
                )
                if args.compile:
                    compiled = replace(model, unet=torch.compile(model.unet))
                    rate = ceiling(compiled, [chunk], min_seconds)[0]
                    row(kind, dtype, "ceiling (compiled)", None, rate, rate / top, "torch.compile")
                n = n_images if kind == "default" or cuda else max(8, n_images // 4)
                for method, stage in (
                    ("diffpathv2", "features (V2)"),
                    ("diffpath6d", "baseline (6-D)"),
                ):
                    config = FeatureConfig(
                        method=method, timesteps=k, dtype=dtype, forward_batch=chunk
                    )
                    seconds = timed(
                        lambda m=model, c=config, n=n: extract_features(m, x[:n], ids[:n], c),
                        model.device,
                        min_seconds,
                    )
                    row(name, dtype, stage, n / seconds, n * k / seconds, n * k / seconds / top)
                if kind != "default":
                    continue
                config = FeatureConfig(timesteps=k, dtype=dtype, forward_batch=chunk)
                for in_flight in (1, 2):
                    work = tmp / f"core-{dtype}-{in_flight}"
                    seconds = pipeline_core(model, source, config, work, in_flight)
                    row(
                        name,
                        dtype,
                        f"pipeline (core) x{in_flight}",
                        n_images / seconds,
                        n_images * k / seconds,
                        n_images * k / seconds / top,
                        f"Parquet bytes -> shard Parquet, {in_flight} shard(s) in flight",
                    )
                try:
                    seconds = pipeline_flow(source, config, args.device, tmp / f"flow-{dtype}")
                    row(
                        name,
                        dtype,
                        "pipeline (flow)",
                        n_images / seconds,
                        n_images * k / seconds,
                        n_images * k / seconds / top,
                        "through Prefect, thread runner",
                    )
                except ImportError:
                    print("  (Prefect not installed here: pipeline through the flow skipped)")
                del model
                if cuda:
                    torch.cuda.empty_cache()
    memory = []
    for n in sizes:
        source = images_parquet(n, Path(tempfile.mkdtemp()) / "images.parquet", args.data)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(source),
                "--device",
                args.device,
                "--models",
                "default",
                "--dtypes",
                dtypes[-1],
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        shutil.rmtree(source.parent)
        memory.append(json.loads(child.stdout.strip().splitlines()[-1]))
        m = memory[-1]
        gpu = "" if m["gpu_mb"] is None else f", GPU {m['gpu_mb']:.0f} MB"
        print(
            f"memory {n:7d} images: peak RSS during the pipeline {m['rss_mb']:.0f} MB "
            f"(peak before it {m['rss_before_mb']:.0f} MB){gpu}, {n / m['seconds']:.0f} img/s",
            flush=True,
        )
    args.json.write_text(json.dumps({**header, "rows": rows, "memory": memory}, indent=1))
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
