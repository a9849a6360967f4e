"""Profile sidecache under one benchmark load with py-spy:
``python -m bench.profile [--scenario l1_hit] [--duration 10] [--native]``.

Starts the bench upstream and one sidecache (pinned like in ``bench.run``), puts the
scenario's load on it with the same generator, records py-spy samples of the sidecache
process meanwhile, and prints where the time goes: functions by own time (the leaf of the
stack), functions by inclusive time, and files by own time. The raw stacks are kept
(``--raw FILE``) for a flame graph (``flamegraph.pl FILE > out.svg``) or speedscope.

Needs py-spy (``pip install py-spy``) and permission to ptrace the child (root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.load import Load, pick_generator
from bench.run import HOT_KEYS, MIX_EVERY, NO_STORE, SELECT, choose_cores, start_child
from bench.scenarios import JSON, SELECT_BODY, prime_hot_keys, prime_until
from bench.servers import BenchUpstream, write_sidecache_config
from examples.embedded import RedisServer
from examples.processes import Sidecache, pinned, stopping_on_sigterm

SCENARIOS = ("l1_hit", "l2_hit", "miss", "pass", "mix", "nostore")
NONCE = "profile"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find_py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def short_file(path: str) -> str:
    """``.../site-packages/aiohttp/web_protocol.py`` → ``aiohttp/web_protocol.py``."""
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return path


def summarise(raw: str, top: int) -> str:
    """Own time per function, inclusive time per function and own time per file, from
    py-spy's raw output (one ``frame;frame;... count`` line per distinct stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_file: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                frames.append((frame, frame))
                continue
            file = short_file(match["file"])
            frames.append((f"{match['func']} ({file})", file))
        name, file = frames[-1]
        own[name] += count
        per_file[file] += count
        for frame_name in {name for name, _ in frames}:
            inclusive[frame_name] += count
    if not total:
        return "no samples (is ptrace allowed?)"

    def block(title: str, counts: Counter[str]) -> list[str]:
        lines = [f"{title}:"]
        for name, count in counts.most_common(top):
            lines.append(f"  {100 * count / total:5.1f}%  {name}")
        return lines

    # Frames on every stack (the event loop, the CLI's main) say nothing: leave them out.
    inclusive = Counter({name: n for name, n in inclusive.items() if n < total})
    out = [f"{total} samples"]
    out += block("own time by function", own)
    out += block("inclusive time by function (below the event loop)", inclusive)
    out += block("own time by file", per_file)
    return "\n".join(out)


def scenario_load(scenario: str, url: str) -> Load:
    """What ``bench.run``'s scenario of that name sends."""
    if scenario == "pass":
        return Load(url, "GET", "/agents")
    if scenario == "miss":
        return Load(url, "POST", SELECT, headers=JSON, new_every=1)
    if scenario == "mix":
        return Load(url, "POST", SELECT, headers=JSON, new_every=MIX_EVERY, hot_keys=HOT_KEYS)
    headers = NO_STORE if scenario == "nostore" else JSON
    return Load(url, "POST", SELECT, SELECT_BODY, headers=headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--scenario", choices=SCENARIOS, default="l1_hit")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load (1-60)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C extension frames")
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="also sample threads not holding the GIL (idle executor threads show up as busy)",
    )
    parser.add_argument("--top", type=int, default=25, help="lines per table")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks in this file")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60:
        parser.error("--duration: 1 to 60")
    py_spy = find_py_spy()
    load_cpus, sut_cpus = choose_cores()
    if load_cpus is not None:
        os.sched_setaffinity(0, load_cpus)
    generator = pick_generator(load_cpus)

    with (
        stopping_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="sidecache-profile-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        backend = start_child(stack, BenchUpstream(cpus=load_cpus))
        redis_url = ""
        if args.scenario == "l2_hit":
            redis_url = stack.enter_context(RedisServer()).url
        config = write_sidecache_config(
            workdir / "sidecache.yaml",
            backend.url,
            l1=args.scenario != "l2_hit",
            redis_url=redis_url,
        )
        sidecache = start_child(stack, Sidecache(config, backend.url, cpus=sut_cpus))
        if args.scenario in ("l1_hit", "l2_hit"):
            detail = "l1" if args.scenario == "l1_hit" else "l2"
            prime_until(
                sidecache.url + SELECT, SELECT_BODY, "Cache-Status", f"hit; detail={detail}"
            )()
        if args.scenario == "mix":
            prime_hot_keys(sidecache.url + SELECT, HOT_KEYS, "Cache-Status", "hit")(NONCE)
        load = scenario_load(args.scenario, sidecache.url)

        raw_path = args.raw or workdir / "profile.raw"
        command = [
            py_spy, "record", "--pid", str(sidecache.pid), "--duration", str(args.duration),
            "--rate", str(args.rate), "--format", "raw", "--nolineno", "-o", str(raw_path),
        ]  # fmt: skip
        if args.native:
            command.append("--native")
        if not args.all_threads:
            command.append("--gil")
        recorder = subprocess.Popen(
            pinned(command, load_cpus), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        result = generator.run(load, args.duration + 1, args.connections, NONCE)
        try:
            _, errors = recorder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, errors = recorder.communicate()
        if recorder.returncode != 0:
            print(errors.decode(errors="replace")[-2000:], file=sys.stderr)
            return 1
        print(
            f"{args.scenario}: {result.rps:,.0f} req/s while profiling "
            f"(p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms; py-spy slows it a little)"
        )
        print(summarise(raw_path.read_text(), args.top))
        if args.raw:
            print(f"raw stacks: {args.raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
