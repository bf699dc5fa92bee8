"""Load test of ``simpsons serve`` on loopback: concurrent picture requests against a real uvicorn server.

    .venv/bin/python bench/web_load.py [--requests 50] [--concurrency 50] [--url http://127.0.0.1:PORT]

Without ``--url`` it starts ``simpsons serve`` on a free loopback port and stops it at the end. Each
sample picture is first sent once on its own; the ones whose answer names the character in their file
name are sent again one at a time, then ``--requests`` times in all, ``--concurrency`` at once, and every
answer must name that character. Prints p50, p95 (and max) latency and the throughput; exits 1 on a
wrong answer.
Bounded: one round of requests, each with a 120 s timeout; loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def post_picture(url: str, data: bytes, timeout: float = 120) -> dict:
    """``POST /api/predict`` with the picture as a multipart form; the JSON answer."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"picture.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/predict", body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def recognised_pictures(url: str) -> list[tuple[str, bytes]]:
    """``(character, bytes)`` of the sample pictures the server names right when asked one at a time."""
    pictures = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        character = path.stem.rsplit("_", 1)[0]
        data = path.read_bytes()
        if post_picture(url, data)["character"] == character:
            pictures.append((character, data))
    return pictures


def load(url: str, pictures: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict:
    """Send ``requests`` pictures, ``concurrency`` at once (released together); latencies and wrong answers."""
    start = threading.Barrier(min(requests, concurrency))

    def one(index: int) -> tuple[float, str | None]:
        character, data = pictures[index % len(pictures)]
        if index < concurrency:
            start.wait()
        began = time.perf_counter()
        answer = post_picture(url, data)["character"]
        return time.perf_counter() - began, None if answer == character else f"{character} answered {answer}"

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - began
    latencies = [seconds for seconds, _ in results]
    return {"requests": requests, "concurrency": concurrency, "wrong": [w for _, w in results if w],
            "p50_ms": 1000 * percentile(latencies, 0.50), "p95_ms": 1000 * percentile(latencies, 0.95),
            "max_ms": 1000 * max(latencies), "wall_s": wall, "requests_per_s": requests / wall}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def started_server(port: int):
    """``simpsons serve`` in a subprocess until the block ends; waits for ``/healthz``."""
    executable = Path(sys.executable).parent / "simpsons"
    server = subprocess.Popen([str(executable), "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("simpsons serve did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--url", help="a running server (default: start one on a free loopback port)")
    args = parser.parse_args()
    with started_server(free_port()) if args.url is None else nullcontext(args.url.rstrip("/")) as url:
        pictures = recognised_pictures(url)
        serial = load(url, pictures, len(pictures), 1)
        result = load(url, pictures, args.requests, args.concurrency)
    print(f"{len(pictures)} sample pictures recognised; one at a time: p50 {serial['p50_ms']:.0f} ms, "
          f"p95 {serial['p95_ms']:.0f} ms")
    print(f"{result['requests']} requests, {result['concurrency']} at once: p50 {result['p50_ms']:.0f} ms, "
          f"p95 {result['p95_ms']:.0f} ms, max {result['max_ms']:.0f} ms, {result['requests_per_s']:.1f} requests/s; "
          f"{len(result['wrong'])} wrong answers {result['wrong'] or ''}")
    return 1 if result["wrong"] or serial["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
