"""Channel layer benchmark: ours against the seed, Django Channels layers and raw broker clients, in one run.

    python -m bench.layer_bench                     # default cases, every implementation that can run
    python -m bench.layer_bench --full              # fan-out matrix 10..10,000 members x 1..8 processes
    python -m bench.layer_bench --short --impls ours:redis,ours:inmemory --project build/realtime_chat

Run from the template's root with an interpreter that has the generated project's dependencies.
``ours:*`` is the layer of a baked project (``--project PATH``, or a fresh bake of this template);
the peers run from ``bench/.venv-peers``, created on first use (``bench/project.py``). Each case runs
in fresh OS processes (``bench/runner.py``) with a deadline: a hung or lossy implementation is
reported in the table ("timeout", "lost 60%"), never blocks the run. Every case uses its own name
prefix and is cleaned up afterwards, so runs can share brokers with tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.project import BENCH, BROKER_URLS, PEERS_VENV, TEMPLATE, peers_python, project

RUNNER = BENCH / "runner.py"
DOCS = TEMPLATE / "docs" / "benchmarks"
ALL_BACKENDS = ("inmemory", "redis", "postgresql", "nats", "rabbitmq")
PEERS = ("channels_redis:core", "channels_redis:pubsub", "channels_postgres:postgresql", "channels_rabbitmq:rabbitmq")
RAW = (
    "raw:redis-awaited", "raw:redis-pipelined", "raw:nats-core", "raw:nats-jetstream", "raw:rabbitmq-confirmed",
    "raw:postgresql-insert", "raw:postgresql-notify",
)
SETUP_TIMEOUT = 60.0
NEEDS_PREPARE = {"seed:postgresql", "channels_postgres:postgresql"}


@dataclass
class Sizes:
    """How much each case sends; ``--short`` shrinks everything for the test suite."""

    p2p_count: int = 2000
    window: int = 50
    fanout: list[tuple[int, int]] = field(default_factory=lambda: [(1000, 4)])
    fanout_messages: int = 20
    payloads: list[int] = field(default_factory=lambda: [1024, 64 * 1024, 1024 * 1024])
    deadline: float = 20.0
    fanout_deadline: float = 45.0

    def payload_count(self, size: int) -> int:
        return max(3, min(self.p2p_count // 4, (32 * 1024 * 1024) // size))


SHORT = Sizes(p2p_count=200, fanout=[(40, 2)], fanout_messages=5, payloads=[64 * 1024], deadline=30, fanout_deadline=30)
FULL_FANOUT = [(m, p) for m in (10, 100, 1000, 10_000) for p in (1, 2, 4, 8)]


@dataclass
class Result:
    impl: str
    case: str
    rate: float | None = None  # messages/s (p2p, payload) or deliveries/s (fan-out)
    p50: float | None = None  # seconds
    p99: float | None = None
    expected: int = 0
    received: int = 0
    duplicates: int = 0
    status: str = "ok"
    members: int = 0
    processes: int = 0
    payload: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def backend(self) -> str:
        kind, _, name = self.impl.partition(":")
        if kind == "channels_redis":
            return "redis"
        if kind == "raw":
            return name.split("-")[0]
        return name


# ---------------------------------------------------------------------------- processes


def broker_of(impl: str) -> str:
    return Result(impl, "").backend


def broker_answers(backend: str) -> bool:
    if backend == "inmemory":
        return True
    url = urlsplit(BROKER_URLS[backend].split(",")[0])
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 0), timeout=1):
            return True
    except OSError:
        return False


def python_for(impl: str, peers_venv: Path) -> Path | None:
    """Ours and the raw clients run from this virtualenv; the seed and Django peers from the peers' one."""
    if impl.startswith(("ours:", "raw:")):
        return Path(sys.executable)
    python = peers_venv / "bin" / "python"
    return python if python.exists() else None


def is_local(impl: str) -> bool:
    """Process-local layers: sender and receivers must share one process."""
    return impl.endswith(":inmemory")


class Proc:
    """A runner process: JSON lines on stdout, stderr kept in a file for the error message."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Any) -> None:
        self.process = process
        self.stderr = stderr

    @classmethod
    async def start(cls, python: Path, impl: str, role: str, prefix: str, project: Path, **options: Any) -> Proc:
        argv = [str(python), str(RUNNER), "--impl", impl, "--role", role, "--prefix", prefix, "--project", str(project)]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        stderr = await asyncio.to_thread(tempfile.TemporaryFile)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=project, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            start_new_session=True, limit=16 * 1024 * 1024,
        )
        return cls(process, stderr)

    async def event(self, within: float) -> dict[str, Any]:
        """The next JSON event line; raises TimeoutError or RuntimeError (with the process's stderr)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + within
        while True:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                line = await self.process.stdout.readline()
            if not line:
                await self.process.wait()
                raise RuntimeError(self.error_text() or f"exited {self.process.returncode}")
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and "event" in event:
                    return event

    def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{text}\n".encode())

    def error_text(self) -> str:
        self.stderr.seek(0)
        lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:160] if lines else ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), 5)
        self.stderr.close()


async def chore(python: Path, impl: str, role: str, prefix: str, project: Path) -> str | None:
    """Run the ``prepare`` or ``cleanup`` role; the error text if it failed."""
    proc = await Proc.start(python, impl, role, prefix, project)
    try:
        await proc.event(60)
        return None
    except (TimeoutError, RuntimeError) as exc:
        print(f"{role} of {impl} {prefix} failed: {exc}", file=sys.stderr)
        return describe_failure(exc)
    finally:
        await proc.stop()


async def prepare(python: Path, impl: str, prefix: str, project: Path) -> None:
    """Broker setup the case's processes would race to do (schemas, migrations); only some peers need it."""
    if impl in NEEDS_PREPARE:
        failed = await chore(python, impl, "prepare", prefix, project)
        if failed:
            raise RuntimeError(f"setup failed: {failed}")


async def cleanup(python: Path, impl: str, prefix: str, project: Path) -> None:
    await chore(python, impl, "cleanup", prefix, project)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc).replace("|", "/").replace("\n", " ")
    return f"error: {text[:100]}"


def finish(result: Result, errors: Sequence[str], timed_out: bool) -> Result:
    """Status from what arrived: ok, or the share lost / duplicated, and why."""
    problems = []
    if result.expected and result.lost:
        share = 100 * result.lost / result.expected
        problems.append(f"lost {share:.1f}%" if share < 1 else f"lost {share:.0f}%")
    if result.duplicates:
        problems.append(f"{result.duplicates} duplicated")
    if timed_out and result.lost:
        problems.insert(0, "timeout")
    if errors:
        problems.append("error: " + str(errors[0]).replace("|", "/")[:100])
    result.status = ", ".join(problems) or "ok"
    return result


# ---------------------------------------------------------------------------- cases


async def run_p2p(python: Path, project: Path, impl: str, case: str, count: int, window: int, payload: int,
                  deadline: float) -> Result:
    result = Result(impl, case, expected=count, payload=payload, members=1, processes=1 if is_local(impl) else 2)
    prefix = f"bench{secrets.token_hex(4)}"
    procs: list[Proc] = []
    window = min(window, count)
    try:
        await prepare(python, impl, prefix, project)
        if is_local(impl):
            proc = await Proc.start(python, impl, "p2p-local", prefix, project, count=count, window=window,
                                    payload=payload, deadline=deadline)
            procs.append(proc)
            await proc.event(SETUP_TIMEOUT)
            report = await proc.event(deadline + 10)
            start = report["start"]
        else:
            ack_path = os.path.join(tempfile.gettempdir(), f"{prefix}.sock")
            receiver = await Proc.start(python, impl, "p2p-recv", prefix, project, count=count, deadline=deadline,
                                        ack_path=ack_path)
            procs.append(receiver)
            ready = await receiver.event(SETUP_TIMEOUT)
            sender = await Proc.start(python, impl, "p2p-send", prefix, project, count=count, window=window,
                                      payload=payload, channel=ready["channel"], ack_path=ack_path, deadline=deadline)
            procs.append(sender)
            report = await receiver.event(deadline + 15)
            sent = await sender.event(15)
            start = sent["start"]
            report["errors"] = sent["errors"] + report["errors"]
            with contextlib.suppress(OSError):
                os.unlink(ack_path)
        result.received = min(report["unique"], count)
        result.duplicates = report["duplicates"]
        result.p50, result.p99 = report["p50"], report["p99"]
        if start is not None and report["last"] is not None and report["last"] > start:
            result.rate = result.received / (report["last"] - start)
        timed_out = report["last"] is not None and report["last"] - (start or report["last"]) > deadline * 0.95
        finish(result, report["errors"], timed_out or result.lost > 0)
    except (TimeoutError, RuntimeError) as exc:
        result.status = describe_failure(exc)
    finally:
        for proc in procs:
            await proc.stop()
        await cleanup(python, impl, prefix, project)
    return result


async def run_fanout(python: Path, project: Path, impl: str, members: int, processes: int, messages: int,
                     deadline: float) -> list[Result]:
    """One row; for in-process layers a second one: the group_send calls alone (deliveries enqueued/s)."""
    local = is_local(impl)
    processes = 1 if local else processes
    result = Result(impl, f"fan-out {members:,} members / {processes} proc", expected=members * messages,
                    members=members, processes=processes)
    extra: Result | None = None
    prefix = f"bench{secrets.token_hex(4)}"
    procs: list[Proc] = []
    try:
        await prepare(python, impl, prefix, project)
        if local:
            proc = await Proc.start(python, impl, "group-local", prefix, project, members=members, messages=messages,
                                    deadline=deadline)
            procs.append(proc)
            await proc.event(SETUP_TIMEOUT)
            report = await proc.event(deadline + 10)
            reports, start, errors = [report], report["start"], list(report["errors"])
            if report.get("sent") and report["sent"] > start:
                extra = Result(impl, f"group_send only {members:,} members / 1 proc", expected=members * messages,
                               received=members * messages, members=members, processes=1)
                extra.rate = extra.expected / (report["sent"] - start)
        else:
            shares = [members // processes + (1 if i < members % processes else 0) for i in range(processes)]
            for share in shares:
                procs.append(await Proc.start(python, impl, "group-recv", prefix, project, members=share,
                                              messages=messages, deadline=deadline))
            await asyncio.gather(*(proc.event(SETUP_TIMEOUT + members / 100) for proc in procs))
            for proc in procs:
                proc.send_line(str(deadline))
            sender = await Proc.start(python, impl, "group-send", prefix, project, messages=messages, deadline=deadline)
            procs.append(sender)
            reports = list(await asyncio.gather(*(proc.event(deadline + 15) for proc in procs[:-1])))
            sent = await sender.event(15)
            start, errors = sent["start"], list(sent["errors"])
            for report in reports:
                errors += report["errors"]
        result.received = sum(min(r["unique"], r["expected"]) for r in reports)
        result.duplicates = sum(r["duplicates"] for r in reports)
        lasts = [r["last"] for r in reports if r["last"] is not None]
        if lasts and max(lasts) > start:
            result.rate = result.received / (max(lasts) - start)
        p50s = [r["p50"] for r in reports if r["p50"] is not None]
        p99s = [r["p99"] for r in reports if r["p99"] is not None]
        result.p50 = sorted(p50s)[len(p50s) // 2] if p50s else None
        result.p99 = max(p99s) if p99s else None
        finish(result, errors, result.lost > 0)
    except (TimeoutError, RuntimeError) as exc:
        result.status = describe_failure(exc)
    finally:
        for proc in procs:
            await proc.stop()
        await cleanup(python, impl, prefix, project)
    return [result] if extra is None else [result, extra]


def payload_label(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


async def _one(case: Any) -> list[Result]:
    return [await case]


async def run_impl(impl: str, sizes: Sizes, cases: set[str], project: Path, peers_venv: Path, log: Any = None,
                   repeat: int = 1) -> list[Result]:
    """Every case of one implementation; a missing interpreter or broker becomes one row saying so."""
    python = python_for(impl, peers_venv)
    backend = broker_of(impl)
    if python is None:
        return [Result(impl, "all", status=f"skipped: no peers venv at {peers_venv}")]
    if backend in BROKER_URLS and not broker_answers(backend):
        return [Result(impl, "all", status=f"skipped: {backend} broker does not answer")]
    results: list[Result] = []

    async def best(make: Any) -> list[Result]:
        """Run a case ``repeat`` times; keep the fastest clean run (the machine is shared and noisy)."""
        runs = [await make() for _ in range(max(1, repeat))]
        rows: list[Result] = []
        for index in range(len(runs[0])):
            candidates = [run[index] for run in runs if len(run) > index]
            clean = [r for r in candidates if r.status == "ok" and r.rate]
            rows.append(max(clean, key=lambda r: r.rate or 0.0) if clean else candidates[-1])
        return rows

    def done(result: Result) -> None:
        results.append(result)
        if log is not None:
            rate = f"{result.rate:,.0f}/s" if result.rate else "-"
            print(f"  {impl:32} {result.case:34} {rate:>14}  {result.status}", file=log, flush=True)

    if "p2p" in cases:
        for row in await best(lambda: _one(run_p2p(python, project, impl, "p2p", sizes.p2p_count, sizes.window, 16,
                                                   sizes.deadline))):
            done(row)
    if "fanout" in cases and not impl.startswith("raw:"):
        seen: set[int] = set()
        for members, processes in sizes.fanout:
            if is_local(impl) and members in seen:  # one process whatever the matrix says
                continue
            seen.add(members)
            for row in await best(lambda m=members, p=processes: run_fanout(
                    python, project, impl, m, p, sizes.fanout_messages, sizes.fanout_deadline)):
                done(row)
    if "payload" in cases:
        for size in sizes.payloads:
            for row in await best(lambda size=size: _one(run_p2p(
                    python, project, impl, f"payload {payload_label(size)}", sizes.payload_count(size), sizes.window,
                    size, sizes.deadline))):
                done(row)
    return results


def available_impls(project: Path) -> list[str]:
    """Ours on every backend the baked project has, the seed on every backend, the Django peers, the raw clients."""
    backends = project / "app" / "channels" / "backends"
    ours = [f"ours:{name}" for name in ALL_BACKENDS if (backends / name / "layer.py").exists()]
    seed = [f"seed:{name}" for name in ALL_BACKENDS]
    return [*ours, *seed, *PEERS, *RAW]


# ---------------------------------------------------------------------------- report


def fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "—"


def fmt_ms(value: float | None) -> str:
    return f"{value * 1000:.1f}" if value is not None else "—"


def ratio(ours: Result, other: Result | None) -> str:
    if other is None:
        return "—"
    if not ours.rate or ours.status != "ok":
        return "—"
    if not other.rate:
        return f"∞ (peer: {other.status})" if other.status != "ok" else "—"
    suffix = "" if other.status == "ok" else " (peer lossy)"
    return f"{ours.rate / other.rate:.1f}x{suffix}"


def best_raw(results: Sequence[Result], backend: str, case: str) -> Result | None:
    """The raw-client ceiling of a broker: its fastest variant, for the p2p/payload case (fan-out uses p2p)."""
    case = "p2p" if case.startswith("fan-out") else case
    raws = [r for r in results if r.impl.startswith("raw:") and r.backend == backend and r.case == case and r.rate]
    return max(raws, key=lambda r: r.rate or 0.0, default=None)


def find(results: Sequence[Result], impl: str, case: str) -> Result | None:
    return next((r for r in results if r.impl == impl and r.case == case), None)


def markdown(results: Sequence[Result], title: str = "Channel layer benchmark", note: str = "") -> str:
    lines = [
        f"# {title}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, brokers on loopback.",
        "`p2p`/`payload`: messages/s, sender and receiver in separate OS processes for distributed layers,",
        "50 messages in flight; latency is send to receive. `fan-out`: deliveries/s from the first group_send",
        "to the last delivery, members spread over the receiving processes. Ratios compare ours with the seed",
        "on the same backend, with channels_redis core, and with the fastest raw client of the broker",
        "(for fan-out: its p2p messages/s). A ratio is shown only when ours lost nothing.",
        "Status: `timeout` = not everything arrived before the case's deadline (the rate then counts what did);",
        "`error: …` = the first exception a sender or receiver raised. `group_send only` rows (in-process layers)",
        "time the group_send calls alone: deliveries enqueued per second, before any member reads.",
        "",
    ]
    if note:
        lines += [note, ""]
    header = ("| case | implementation | msgs/s | p50 ms | p99 ms | lost | dup | status "
              "| ours ÷ seed | ours ÷ channels_redis | ours ÷ raw |")
    cases: list[str] = []
    for result in results:
        if result.case not in cases:
            cases.append(result.case)
    for case in cases:
        lines += [f"## {case}", "", header, "|" + "---|" * 11]
        rows = [r for r in results if r.case == case]
        for r in rows:
            cells = [case, f"`{r.impl}`", fmt_rate(r.rate), fmt_ms(r.p50), fmt_ms(r.p99),
                     str(r.lost) if r.expected else "—", str(r.duplicates) if r.expected else "—", r.status]
            if r.impl.startswith("ours:"):
                seed = find(results, f"seed:{r.backend}", case)
                cells += [ratio(r, seed), ratio(r, find(results, "channels_redis:core", case)),
                          ratio(r, best_raw(results, r.backend, case))]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: Path) -> Path | None:
    """deliveries/s against group size (at the most processes run) and against process count (1,000 members)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fanout = [r for r in results if r.case.startswith("fan-out") and r.rate]
    if not fanout:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for impl in sorted({r.impl for r in fanout}):
        mine = [r for r in fanout if r.impl == impl]
        procs = max(r.processes for r in mine)
        members = 1000 if any(r.members == 1000 for r in mine) else max(r.members for r in mine)
        for axes, rows, x, label in (
            (left, [r for r in mine if r.processes == procs], "members", f"{impl} ({procs} proc)"),
            (right, [r for r in mine if r.members == members], "processes", f"{impl} ({members:,} members)"),
        ):
            clean = sorted((getattr(r, x), r.rate or 0.0) for r in rows if r.status == "ok")
            lossy = sorted((getattr(r, x), r.rate or 0.0) for r in rows if r.status != "ok")
            line = axes.plot(*zip(*clean, strict=True), marker="o", label=label)[0] if clean else None
            if lossy:  # a rate that lost messages or timed out: marked, not joined
                axes.scatter(*zip(*lossy, strict=True), marker="x", s=60,
                             color=line.get_color() if line else None, label=None if line else f"{label} (lossy)")
    left.set(xscale="log", yscale="log", xlabel="group members", ylabel="deliveries/s",
             title="group_send fan-out vs group size")
    right.set(yscale="log", xlabel="receiving OS processes", ylabel="deliveries/s",
              title="group_send fan-out vs processes")
    fig.suptitle("x = timed out or lost messages (rate of what arrived)", fontsize=8, y=0.02)
    for axes in (left, right):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- entry points


async def run(impls: Sequence[str], sizes: Sizes, cases: set[str], project: Path, peers_venv: Path = PEERS_VENV,
              log: Any = None, repeat: int = 1) -> list[Result]:
    results: list[Result] = []
    for impl in impls:
        if log is not None:
            print(f"{impl}", file=log, flush=True)
        results += await run_impl(impl, sizes, cases, project, peers_venv, log, repeat)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", help="comma-separated, e.g. ours:redis,seed:redis,channels_redis:core,"
                        "raw:redis-awaited (default: all)")
    parser.add_argument("--cases", default="p2p,fanout,payload", help="any of p2p,fanout,payload")
    parser.add_argument("--full", action="store_true", help="fan-out 10/100/1,000/10,000 members x 1/2/4/8 processes")
    parser.add_argument("--short", action="store_true", help="small counts (what the test suite runs)")
    parser.add_argument("--repeat", type=int, default=1, help="run each case N times, keep the best clean run")
    parser.add_argument("--deadline", type=float, help="seconds per p2p/payload case")
    parser.add_argument("--p2p-count", type=int, help="messages per p2p case (default 2,000)")
    parser.add_argument("--fanout-deadline", type=float, help="seconds per fan-out case")
    parser.add_argument("--fanout-messages", type=int, help="group_sends per fan-out case")
    parser.add_argument("--project", type=Path, help="a baked copy of the template (default: bake one into a temp dir)")
    parser.add_argument("--peers-venv", type=Path, default=PEERS_VENV)
    parser.add_argument("--no-setup", action="store_true", help="never create the peers' virtualenv")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="results JSON of an earlier run to include in the table and plot")
    parser.add_argument("--no-run", action="store_true", help="only render the --merge files (table and plot)")
    parser.add_argument("--note", default="", help="a line for the table's header (with --no-run)")
    parser.add_argument("--plot", type=Path, default=None,
                        help=f"PNG path (default: {DOCS}/layer_scaling.png, none with --short)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    sizes = Sizes(**asdict(SHORT)) if args.short else Sizes()
    if args.full:
        sizes.fanout = FULL_FANOUT
    for name in ("deadline", "fanout_deadline", "fanout_messages", "p2p_count"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    cases = set(args.cases.split(","))
    results: list[Result] = []
    for path in args.merge:
        results += [Result(**row) for row in json.loads(path.read_text())]
    load_before = os.getloadavg()[0]
    if not args.no_run:
        with project(args.project) as baked:
            impls = args.impls.split(",") if args.impls else available_impls(baked)
            if any(python_for(impl, args.peers_venv) is None for impl in impls):
                peers_python(args.peers_venv, create=not args.no_setup)
            results += asyncio.run(run(impls, sizes, cases, baked, args.peers_venv, log=sys.stderr,
                                       repeat=args.repeat))
    note = (f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end of this run;"
            f" best of {args.repeat} run(s) per case." if not args.no_run else args.note)
    latest: dict[tuple[str, str], Result] = {}
    for result in results:  # a case run again (here or in a later --merge file) replaces the earlier row
        latest.pop((result.impl, result.case), None)
        latest[(result.impl, result.case)] = result
    results = list(latest.values())
    table = markdown(results, note=note)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    plot_path = args.plot or (None if args.short else DOCS / "layer_scaling.png")
    if plot_path is not None and not args.no_plot:
        written = plot(results, plot_path)
        if written:
            print(f"plot: {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
