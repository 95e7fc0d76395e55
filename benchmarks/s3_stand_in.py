"""A local S3 for benchmarks: moto in its own process behind a WSGI middleware that adds a
per-request latency and counts requests by method and top-level folder.

    python benchmarks/s3_stand_in.py --port 9000 --latency 0.02
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter


def kind(environ: dict) -> str:
    """A request as `<METHOD> <folder>`: the key's first folder (a listing, `LIST`, by its
    prefix's), so the cache's, the images' and the outputs' requests count apart."""
    from urllib.parse import parse_qs

    method, parts = environ["REQUEST_METHOD"], environ["PATH_INFO"].strip("/").split("/")
    if len(parts) > 1:
        return f"{method} {parts[1]}"
    query = parse_qs(environ.get("QUERY_STRING", ""))
    folder = query.get("prefix", [""])[0].split("/", 1)[0] or "bucket"
    return f"{'LIST' if method == 'GET' and 'list-type' in query else method} {folder}"


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
            counts[kind(environ)] += 1
        time.sleep(latency)
        return moto(environ, start_response)

    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


def object_bytes(i: int, size: int = 1500) -> bytes:
    """The body of `images/NNNNNN.jpg` in the GET-only stand-in: distinct, `size` bytes."""
    return i.to_bytes(8, "little") * (size // 8)


def serve_gets(port: int, latency: float) -> None:
    """A GET-only S3 on asyncio (aiohttp): `GET /<bucket>/images/NNNNNN.jpg` answers
    `object_bytes(N)` (ranges honoured) after `latency` seconds, thousands in flight; far
    faster than moto, so a client's own read rate shows. Counts as `serve`."""
    import asyncio

    from aiohttp import web

    counts: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/_counts":
            body = json.dumps(dict(counts))
            counts.clear()
            return web.Response(text=body, content_type="application/json")
        counts[f"{request.method} {request.path.strip('/').split('/')[1]}"] += 1
        await asyncio.sleep(latency)
        name = request.path.rsplit("/", 1)[-1]
        if not name.endswith(".jpg") or not name[:-4].isdigit():
            return web.Response(status=404)
        data = object_bytes(int(name[:-4]))
        headers = {"ETag": f'"{hash(data)}"', "Last-Modified": "Tue, 01 Dec 2026 00:00:00 GMT"}
        if request.http_range.start is not None or request.http_range.stop is not None:
            part = data[request.http_range]
            end = (request.http_range.start or 0) + len(part) - 1
            headers["Content-Range"] = f"bytes {request.http_range.start or 0}-{end}/{len(data)}"
            return web.Response(body=part, status=206, headers=headers)
        return web.Response(body=data, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_server(latency: float, gets_only: bool = False) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, __file__, "--port", str(port), "--latency", str(latency)]
    args += ["--gets-only"] if gets_only else []
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, required=True)
    parser.add_argument("--gets-only", action="store_true", help="the fast GET-only server")
    args = parser.parse_args()
    (serve_gets if args.gets_only else serve)(args.port, args.latency)
