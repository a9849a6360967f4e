"""LLM streams: ``--clients`` identical streaming chat completions at once, straight to an
OpenAI-compatible upstream and through sidecache (``mode: openai``), then once more through
sidecache (a hit). Reports upstream calls, time to first chunk (TTFC) and time to the whole
stream, p50 / p99.

The upstream streams ``--chunks`` chunks ``--gap-ms`` apart (a model writing its answer), so
a stream lasts about ``chunks * gap`` ms. Directly, every client is one model call. Through
sidecache the first client opens one upstream stream and the others join it live: one call,
and each client's first chunk arrives about when the first client's does, not at the end.

    python -m bench.llm_streams [--clients 20] [--chunks 20] [--gap-ms 25] [--out FILE]

Bounded: three trials of one stream's length each, plus start-up (a few seconds). sidecache
runs as its own process (``sidecache run``); the upstream and the clients share this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from bench.load import nearest_rank
from examples.embedded import free_port

SIDECACHE = str(Path(sys.executable).with_name("sidecache"))
PATH = "/v1/chat/completions"
QUESTION = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Summarise the release notes."}],
    "temperature": 0,
    "stream": True,
    "stream_options": {"include_usage": True},
}
START_TIMEOUT = 20.0
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Trial:
    """What one trial saw."""

    upstream_calls: int
    ttfc_p50_ms: float
    ttfc_p99_ms: float
    total_p50_ms: float
    failed: int


class StreamingModel:
    """An upstream that streams ``chunks`` chat-completion chunks ``gap`` seconds apart."""

    def __init__(self, chunks: int, gap: float) -> None:
        self.chunks, self.gap, self.calls = chunks, gap, 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PATH, self._chat)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.calls += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {"id": "c", "object": "chat.completion.chunk", "model": "bench", "usage": None}
        for n in range(self.chunks):
            choice = {"index": 0, "delta": {"content": f" word{n}"}, "finish_reason": None}
            await response.write(
                b"data: %s\n\n" % json.dumps({**head, "choices": [choice]}).encode()
            )
            await asyncio.sleep(self.gap)
        final = {"index": 0, "delta": {}, "finish_reason": "stop"}
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": self.chunks,
            "total_tokens": 12 + self.chunks,
        }
        for chunk in ({**head, "choices": [final]}, {**head, "choices": [], "usage": usage}):
            await response.write(b"data: %s\n\n" % json.dumps(chunk).encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def trial(url: str, model: StreamingModel, clients: int) -> Trial:
    """``clients`` identical streaming requests at once against ``url``."""
    before = model.calls
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> tuple[float, float] | None:
            began = time.perf_counter()
            async with session.post(url + PATH, json=QUESTION) as response:
                first = None
                async for _ in response.content.iter_any():
                    first = first or time.perf_counter() - began
                ok = response.status == 200 and first is not None
            return (first, time.perf_counter() - began) if ok else None

        results = await asyncio.gather(*(one() for _ in range(clients)), return_exceptions=True)
    timings = [r for r in results if isinstance(r, tuple)]
    firsts = sorted(t[0] * 1000 for t in timings) or [float("nan")]
    totals = sorted(t[1] * 1000 for t in timings) or [float("nan")]
    return Trial(
        model.calls - before,
        round(nearest_rank(firsts, 50), 2),
        round(nearest_rank(firsts, 99), 2),
        round(nearest_rank(totals, 50), 2),
        clients - len(timings),
    )


async def run(args: argparse.Namespace) -> dict[str, Trial]:
    model = StreamingModel(args.chunks, args.gap_ms / 1000)
    runner = web.AppRunner(model.app(), access_log=None)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    upstream = f"http://127.0.0.1:{upstream_port}"
    port, admin_port = free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "admin_host": "127.0.0.1",
                   "admin_port": admin_port, "drain_delay": "0s"},
        "upstream": {"url": upstream},
        "monitor": {"enabled": False},
        "routes": [{"name": "chat", "path": PATH, "mode": "openai"}],
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(config, file)
        file.flush()
        process = await asyncio.create_subprocess_exec(SIDECACHE, "run", "--config", file.name)
        try:
            await _ready(f"http://127.0.0.1:{admin_port}/healthz")
            proxy = f"http://127.0.0.1:{port}"
            return {
                "direct": await trial(upstream, model, args.clients),
                "sidecache, cold (one stream shared)": await trial(proxy, model, args.clients),
                "sidecache, stored (hits)": await trial(proxy, model, args.clients),
            }
        finally:
            process.terminate()
            await process.wait()
            await runner.cleanup()


async def _ready(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sidecache did not start")
            await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=25.0)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(f"{args.clients} identical streaming requests at once; the upstream streams "
          f"{args.chunks} chunks {args.gap_ms:g} ms apart\n")  # fmt: skip
    print(f"{'':38}{'upstream calls':>15}{'TTFC p50':>10}{'TTFC p99':>10}{'whole p50':>11}"
          f"{'failed':>8}")  # fmt: skip
    for name, t in results.items():
        print(f"{name:38}{t.upstream_calls:>15}{t.ttfc_p50_ms:>8.1f}ms{t.ttfc_p99_ms:>8.1f}ms"
              f"{t.total_p50_ms:>9.1f}ms{t.failed:>8}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
