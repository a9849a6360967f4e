"""The Python load generator used when ``wrk`` is not installed.

``python -m bench.pyload SPEC_JSON`` keeps ``connections`` HTTP/1.1 keep-alive connections
busy for ``duration`` seconds (and at most ``MAX_REQUESTS`` requests), one request at a time
each, like wrk, and prints one ``BENCH_RESULT {...}`` line in wrk's result shape. Bodies
made per request follow one counter shared by all connections, as in wrk's one thread, so
a mix's new keys are exactly one request in ``new_every``. Raw
asyncio streams rather than an HTTP client library: the generator should cost as little as
possible per request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from bench.load import RESULT_MARK, Load, nearest_rank

MAX_REQUESTS = 5_000_000
IO_TIMEOUT = 5.0


class Recorder:
    """Latencies and errors of one run, bounded in count and time, and the count of
    requests sent (which numbers the bodies)."""

    def __init__(self, duration: float) -> None:
        self.deadline = time.perf_counter() + duration
        self.latencies: list[float] = []
        self.errors = 0
        self.sent = 0

    def more(self) -> bool:
        return len(self.latencies) < MAX_REQUESTS and time.perf_counter() < self.deadline


def load_of(spec: dict) -> Load:
    fields = {name: spec[name] for name in ("url", "method", "path", "headers")}
    body = spec["body"].encode() if spec["body"] is not None else None
    return Load(**fields, body=body, new_every=spec["new_every"], hot_keys=spec["hot_keys"])


def request_bytes(load: Load, host: str, body: bytes | None) -> bytes:
    lines = [f"{load.method} {load.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in load.headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response whole; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    return status


async def connection(load: Load, nonce: str, recorder: Recorder) -> None:
    parts = urlsplit(load.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader = writer = None
    while recorder.more():
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), IO_TIMEOUT
                )
            assert reader is not None
            recorder.sent += 1
            body = load.nth_body(nonce, recorder.sent)
            began = time.perf_counter()
            writer.write(request_bytes(load, f"{host}:{port}", body))
            status = await asyncio.wait_for(read_response(reader), IO_TIMEOUT)
            recorder.latencies.append(time.perf_counter() - began)
            if status >= 400:
                recorder.errors += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            recorder.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def percentile_us(ordered: list[float], q: float) -> int:
    return int(nearest_rank(ordered, q) * 1e6) if ordered else 0


async def run(spec: dict) -> dict:
    recorder = Recorder(spec["duration"])
    began = time.perf_counter()
    load = load_of(spec)
    await asyncio.gather(
        *(connection(load, spec["nonce"], recorder) for _ in range(spec["connections"]))
    )
    elapsed = time.perf_counter() - began
    ordered = sorted(recorder.latencies)
    return {
        "requests": len(ordered),
        "duration_us": int(elapsed * 1e6),
        "p50_us": percentile_us(ordered, 50),
        "p99_us": percentile_us(ordered, 99),
        "errors": recorder.errors,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
