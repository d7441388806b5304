"""A bounded load test of `fcnseg serve` on loopback: N requests from C concurrent clients, errors, latency, RSS growth.

Starts ``fcnseg serve`` in a subprocess on a free 127.0.0.1 port with a small FCN-8s (or the
checkpoint given), warms it up, then sends ``--requests`` POST /api/predict from ``--clients``
threads (each waits for its answer before sending the next) and stops. Prints p50/p95/max latency,
throughput, the status counts and the server's resident memory (VmRSS) after the warm-up and at the
end. Fails (exit 1) on any error answer or an RSS growth over ``--max-rss-growth-mb``.

    python benchmarks/serve_load.py [--requests 200] [--clients 8] [--size 320x240] [--checkpoint small.pt]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_checkpoint(path: Path) -> Path:
    """A 6-class small FCN-8s with seeded random score layers (so that the answers hold several classes)."""
    import torch

    from fcnseg.weights.checkpoint import save_checkpoint
    from fcnseg.config import ModelConfig
    from fcnseg.data.normalization import IMAGENET_RGB
    from fcnseg.models.fcn import build_model

    torch.manual_seed(0)
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=6, pad=100)
    model = build_model(config)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            getattr(model, name).weight.normal_(0.0, 0.2)
    save_checkpoint(path, model, config, [f"class_{i}" for i in range(6)], IMAGENET_RGB)
    return path


def jpeg(width: int, height: int) -> bytes:
    from fcnseg.data.synthetic import generate_sample

    buffer = io.BytesIO()
    Image.fromarray(generate_sample(0, "val", 0, size=(height, width)).image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def post(port: int, body: bytes, timeout: float) -> tuple[int, float, dict]:
    """One POST /api/predict on a fresh connection: (status, seconds, the server's timings in ms)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status == 200 and not answer.get("labels_png"):
            return -1, time.perf_counter() - start, {}
        return response.status, time.perf_counter() - start, answer.get("timings", {})
    except (OSError, http.client.HTTPException, ValueError):
        return -1, time.perf_counter() - start, {}
    finally:
        connection.close()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the JPEG sent (default 320x240)")
    parser.add_argument("--checkpoint", type=Path, help="default: a small FCN-8s written to a temporary folder")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--max-rss-growth-mb", type=float, default=100.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or small_checkpoint(Path(tmp) / "small.pt")
        body = jpeg(width, height)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        server = subprocess.Popen(
            [sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(port),
             "--workers", str(args.workers), "--queue", str(args.queue)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped:\n{server.stderr.read()}")
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    connection.request("GET", "/api/model")
                    model = json.loads(connection.getresponse().read())
                    connection.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not come up in 120 s")
                    time.sleep(0.2)
            for _ in range(10):  # warm-up: allocator pools, oneDNN kernels for this size
                post(port, body, args.timeout)
            rss_start = rss(server.pid)

            latencies: list[float] = []
            timings: list[dict] = []
            statuses: dict[int, int] = {}
            lock = threading.Lock()
            remaining = [args.requests]
            stop_at = time.monotonic() + args.max_seconds

            def client() -> None:
                while time.monotonic() < stop_at:
                    with lock:
                        if remaining[0] == 0:
                            return
                        remaining[0] -= 1
                    status, seconds, answer_timings = post(port, body, args.timeout)
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == 200:
                            latencies.append(seconds)
                            timings.append(answer_timings)

            start = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            rss_end = rss(server.pid)
        finally:
            server.terminate()  # SIGTERM: uvicorn's graceful stop
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    sent = sum(statuses.values())
    ms = np.array(latencies) * 1e3
    runtime = model["runtime"]
    print(f"fcnseg serve load test: {sent} requests from {args.clients} clients, {width}x{height} JPEG ({len(body) / 1024:.0f} KiB), "
          f"--workers {args.workers} --queue {args.queue}")
    print(f"model {model['arch']}/{model['backbone']}, precision {model['precision']}, torch {runtime['torch']}, "
          f"{runtime['threads']} threads, {cpu_name()} ({os.cpu_count()} logical CPUs)")
    print(f"answers: {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}")
    if len(ms):
        print(f"latency ms: p50 {np.percentile(ms, 50):.0f}  p95 {np.percentile(ms, 95):.0f}  max {ms.max():.0f}  "
              f"(throughput {len(ms) / elapsed:.1f} images/s over {elapsed:.1f} s)")
        parts = {k: np.median([t[k] for t in timings]) for k in ("queue_ms", "decode_ms", "predict_ms", "encode_ms")}
        print("server side, median ms: " + "  ".join(f"{k[:-3]} {v:.0f}" for k, v in parts.items()))
    growth = (rss_end - rss_start) / 1024**2
    print(f"server RSS: {rss_start / 1024**2:.0f} MiB after warm-up, {rss_end / 1024**2:.0f} MiB at the end (growth {growth:+.1f} MiB)")
    failed = sent != args.requests or set(statuses) != {200} or growth > args.max_rss_growth_mb
    print("FAILED" if failed else "OK: no errors, RSS growth within bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
