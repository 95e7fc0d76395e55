"""Local S3s for benchmarks: moto in its own process behind a WSGI middleware that adds a
per-request latency and counts requests by method and top-level folder; and `Nginx`, a
GET-only stand-in fast enough that a client's own read rate shows.

    python benchmarks/s3_stand_in.py --port 9000 --latency 0.02
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
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


NGINX_CONF = """
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
master_process off; daemon off; worker_processes 1;
pid {folder}/nginx.pid; error_log {folder}/error.log;
events {{ worker_connections 8192; }}
http {{
  log_format kind '$request_method $uri';
  access_log {folder}/access.log kind buffer=64k flush=1s;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  server {{
    listen 127.0.0.1:{port};
    location / {{ echo_sleep {latency}; echo_exec @object; }}
    location @object {{ root {folder}/root; }}
  }}
}}
"""


class Nginx:
    """A GET-only S3 that is not the bottleneck: nginx (one process, C) serving the files
    under `<folder>/root/<bucket>/<key>` after `latency` seconds (the echo module's
    non-blocking sleep), ranges honoured, every request logged by method and key. Needs
    Debian's `nginx` and `libnginx-mod-http-echo`. Its own CPU per request is measured, so
    its ceiling is printed beside the client's rate."""

    def __init__(self, folder: str, latency: float) -> None:
        import shutil

        if shutil.which("nginx") is None:
            raise SystemExit("the nginx stand-in needs: apt install nginx libnginx-mod-http-echo")
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        conf = f"{folder}/nginx.conf"
        with open(conf, "w") as handle:
            handle.write(NGINX_CONF.format(folder=folder, port=port, latency=latency))
        self.process = subprocess.Popen(["nginx", "-c", conf], stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.endpoint}/")
            except urllib.error.HTTPError:  # up: it answered (404)
                self.requests_since()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the nginx stand-in did not start")

    def cpu_seconds(self) -> float:
        """The CPU time nginx has used so far (user + system)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def requests_since(self) -> Counter[str]:
        """Requests since the last call, as `<METHOD> <first folder of the key>`."""
        self.process.send_signal(signal.SIGUSR1)  # reopen the log: flushes what it buffered
        time.sleep(0.2)
        log = f"{self.folder}/access.log"
        with open(log) as handle:
            lines = handle.read().splitlines()
        os.truncate(log, 0)
        counts: Counter[str] = Counter()
        for line in lines:
            method, uri = line.split(maxsplit=1)
            parts = uri.strip("/").split("/")
            counts[f"{method} {parts[1] if len(parts) > 1 else 'bucket'}"] += 1
        return counts

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, __file__, "--port", str(port), "--latency", str(latency)]
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
    args = parser.parse_args()
    serve(args.port, args.latency)
