"""Load generators: ``wrk`` with a Lua script when installed, else a bounded Python one.

Every scenario of a run uses the same generator with the same connections and duration, on
the load core. Both report requests, p50 and p99 latency and errors in one shape.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from examples.processes import ROOT, pinned

#: A new key: ``{"task":"bench unique <nonce> <thread> <n>","top_k":3}``, ``n`` counting the
#: requests of the run (wrk's Lua script and ``bench.pyload`` build the same bytes).
UNIQUE_TASK = "bench unique"
#: A hot key, cached before the run: ``{"task":"bench cached <nonce> <i>","top_k":3}``.
HOT_TASK = "bench cached"
RESULT_MARK = "BENCH_RESULT "


def new_body(nonce: str, thread: int, n: int) -> bytes:
    """The body of the ``n``-th request of a run when it asks for a new key."""
    return f'{{"task":"{UNIQUE_TASK} {nonce} {thread} {n}","top_k":3}}'.encode()


def hot_body(nonce: str, i: int) -> bytes:
    """The body of hot key ``i`` of a run (primed into the cache before it)."""
    return f'{{"task":"{HOT_TASK} {nonce} {i}","top_k":3}}'.encode()


@dataclass(frozen=True)
class Load:
    """What to send: one fixed request (``body``), or JSON bodies made per request: a new
    key every ``new_every``-th request (1: every request a miss) and, in between, the
    ``hot_keys`` hot bodies of the run in turn (the keys primed before it)."""

    url: str
    method: str = "GET"
    path: str = "/"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    new_every: int = 0
    hot_keys: int = 0

    def __post_init__(self) -> None:
        if self.new_every > 1 and self.hot_keys < 1:
            raise ValueError("a mix of new and hot keys needs hot_keys")
        if self.new_every and self.body is not None:
            raise ValueError("a fixed body and per-request bodies exclude each other")

    def nth_body(self, nonce: str, n: int) -> bytes | None:
        """The body of the ``n``-th request (from 1) of a run, like wrk's script makes it."""
        if not self.new_every:
            return self.body
        if n % self.new_every == 0:
            return new_body(nonce, 0, n)
        return hot_body(nonce, n % self.hot_keys)


@dataclass(frozen=True)
class LoadResult:
    """What one run of a load generator measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted ``ordered``, by nearest rank."""
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


class LoadGenerator(Protocol):
    name: str

    def run(self, load: Load, duration: float, connections: int, nonce: str) -> LoadResult: ...


def pick_generator(cpus: tuple[int, ...] | None, prefer: str = "auto") -> LoadGenerator:
    """``wrk`` when installed (unless ``prefer`` says ``python``), else the Python one."""
    if prefer != "python" and shutil.which("wrk"):
        return Wrk(cpus)
    if prefer == "wrk":
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return PythonLoad(cpus)


# --- wrk ----------------------------------------------------------------------------------------

_LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\\n',
    "{mark}", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

# Bodies made per request, as ``Load.nth_body``: wrk's one thread is thread 0.
_LUA_BODIES = """
local threads, counter, nonce, hot = 0, 0, "x", {}
setup = function(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end
init = function(args)
  nonce = args[1] or nonce
  for i = 0, {hot_keys} - 1 do
    hot[i] = wrk.format(nil, nil, nil,
      string.format('{"task":"{hot_task} %s %d","top_k":3}', nonce, i))
  end
end
request = function()
  counter = counter + 1
  if counter % {new_every} == 0 then
    local body = string.format('{"task":"{unique_task} %s %d %d","top_k":3}', nonce,
      thread_id or 0, counter)
    return wrk.format(nil, nil, nil, body)
  end
  return hot[counter % {hot_keys}]
end
"""


def _lua_string(value: str | bytes) -> str:
    """A Lua string literal (decimal escapes for every byte that needs one)."""
    data = value.encode() if isinstance(value, str) else value
    plain = set(b" !#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`{|}~")
    plain |= set(b"abcdefghijklmnopqrstuvwxyz")
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in data) + '"'


def wrk_script(load: Load) -> str:
    """The Lua script that makes wrk send ``load`` and print its result as one JSON line."""
    lines = [f"wrk.method = {_lua_string(load.method)}"]
    for name, value in load.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    if load.body is not None:
        lines.append(f"wrk.body = {_lua_string(load.body)}")
    if load.new_every:
        script = _LUA_BODIES.replace("{new_every}", str(load.new_every))
        script = script.replace("{hot_keys}", str(max(load.hot_keys, 1)))
        script = script.replace("{unique_task}", UNIQUE_TASK).replace("{hot_task}", HOT_TASK)
        lines.append(script)
    lines.append(_LUA_DONE.replace("{mark}", RESULT_MARK))
    return "\n".join(lines)


class Wrk:
    """``wrk -t1`` on the load core, driven by a generated Lua script."""

    name = "wrk"

    def __init__(self, cpus: tuple[int, ...] | None) -> None:
        self.cpus = cpus

    def run(self, load: Load, duration: float, connections: int, nonce: str) -> LoadResult:
        seconds = max(1, round(duration))
        with tempfile.TemporaryDirectory(prefix="sidecache-wrk-") as tmp:
            script = Path(tmp) / "load.lua"
            script.write_text(wrk_script(load))
            command = pinned(
                [
                    "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                    "-s", str(script), load.url + load.path, "--", nonce,
                ],
                self.cpus,
            )  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
        return _parse_result(done, "wrk")


# --- Python ---------------------------------------------------------------------------------------


class PythonLoad:
    """``python -m bench.pyload`` on the load core: slower than wrk, so it may be the
    bottleneck for the fastest targets (the table then understates them alike)."""

    name = "python"

    def __init__(self, cpus: tuple[int, ...] | None) -> None:
        self.cpus = cpus

    def run(self, load: Load, duration: float, connections: int, nonce: str) -> LoadResult:
        spec = asdict(load)
        spec["body"] = load.body.decode() if load.body is not None else None
        spec.update(duration=duration, connections=connections, nonce=nonce)
        command = pinned([sys.executable, "-m", "bench.pyload", json.dumps(spec)], self.cpus)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 30, cwd=ROOT
        )
        return _parse_result(done, "python load generator")


def _parse_result(done: subprocess.CompletedProcess[str], what: str) -> LoadResult:
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            raw = json.loads(line[len(RESULT_MARK) :])
            return LoadResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000 if raw["requests"] else math.nan,
                p99_ms=raw["p99_us"] / 1000 if raw["requests"] else math.nan,
                errors=raw["errors"],
            )
    raise RuntimeError(f"{what} printed no result (exit {done.returncode}):\n{done.stderr[-2000:]}")
