"""Object storage at scale, measured on a local S3 server with an injected per-request
latency (moto in its own process behind a middleware that sleeps and counts requests).

    python benchmarks/scale.py reads --files 2000 --latency 0.02

`reads`: a shard of image files read through `read_refs` — concurrently (one ranged GET per
file, `IN_FLIGHT` at a time) and, for comparison, one file after another as before —
reporting images/s and requests by kind per 1,000 images. On a 2-core machine the S3
stand-in itself (moto, single process) bounds the rate; the table says so.
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


def reads(files: int, latency: float) -> dict[str, object]:
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
        from diffpath.io import sources
        from diffpath.io.sources import ImageRef, read_refs

        fs = S3FileSystem(skip_instance_cache=True)
        fs.mkdir("scale")
        blobs = pq.read_table(SAMPLES / "incoming.parquet")["image"].to_pylist()
        objects = {f"scale/images/{i:06d}.jpg": blobs[i % len(blobs)] for i in range(files)}
        fs.pipe(objects)
        refs = [ImageRef(f"s3://{path}", None, path) for path in objects]
        requests_since(endpoint)
        rows = {}
        for name, in_flight in (("concurrent", sources.IN_FLIGHT), ("one by one", 1)):
            sources.IN_FLIGHT = in_flight
            start = time.perf_counter()
            data = read_refs(refs)
            seconds = time.perf_counter() - start
            assert all(isinstance(d, bytes) for d in data)
            counts = requests_since(endpoint)
            rows[name] = {
                "in_flight": in_flight,
                "images_per_s": round(files / seconds),
                "requests_per_1000_images": {k: round(1000 * v / files) for k, v in counts.items()},
            }
        return {"files": files, "latency_s": latency, "cpus": os.cpu_count(), "reads": rows}
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("reads", help="image files read from S3 at a given latency")
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
    result = reads(args.files, args.latency)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
