"""Connection scale (issue 21): this project's chat vs python-socketio + AsyncRedisManager, on Redis.

    python -m bench.connections --clients 20000 --storm 10000        # the issue's scale, both implementations
    python -m bench.connections --impl ours --clients 200 --storm 100 --big-room 200 --slow 20 --out ''   # a smoke run

Per implementation, one bounded case against real servers (gunicorn, ``--workers`` workers, its own Redis
prefix and SQLite file), the clients in ``--agents`` processes of lean sockets (bench/wsclient.py,
bench/conn_agent.py) spread over 127.0.0.2-9, in phases (in this order: connect, big room, broadcast, slow
readers, storms, close):

1. connect: ``--clients`` sockets, ``--at-once`` (100) connecting at a time, each connect + auth + join
   (client *i* in room *i* mod ``--rooms``); then ``big room``: the first ``--big-room`` clients join one
   more room, the same way;
2. server RSS (gunicorn master + workers) before connecting, after connect, after the big room;
3. ``/healthz`` timed every ~200 ms over a fresh connection from this process, in every phase;
4. broadcast: ``--broadcasts`` messages, one at a time, to the big room, timed until every member has it;
5. slow readers: ``--slow`` more clients with a 4 KiB receive buffer that never read, in a room that gets
   ``--burst`` messages: the servers' RSS growth per slow socket, and how many the server closed;
6. storms: the last ``--storm`` clients drop (RST) and reconnect all at once (ours: auth + join with
   ``since`` = the last seq they saw; socket.io: connect + join), each retrying with backoff; ``--storms`` times;
7. leaks: the workers' RSS, open fds and broker connections at baseline, connected, after each storm and
   after every client closed; what the servers logged (tracebacks, exceptions), the log then removed.

Every phase has a deadline, the servers' process groups are killed and their Redis keys and databases
removed whatever happens. Writes ``--out`` (markdown), its ``.json`` and ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import conn_agent
from bench.conn_report import Report, document, merge, percentile, plot, table
from bench.project import TEMPLATE, peers_python, project
from bench.ws_load import (
    PEERS_PYTHON,
    REDIS_URL,
    Server,
    cleanup_redis,
    database,
    rss_kib,
    seed_accounts,
    start_server,
)

IMPLS = ("ours", "socketio")
NOFILE = 262_144
SEED_BATCH = 10_000  # names per seeding subprocess (its own 300 s timeout)
BROKER_PORT = urllib.parse.urlsplit(REDIS_URL).port or 6379


class PhaseDeadline(TimeoutError):
    """A phase ran past its deadline: the case stops there, with what it measured so far."""


def raise_nofile(wanted: int = NOFILE) -> int:
    """Soft and hard RLIMIT_NOFILE as high as allowed (root: ``wanted``); children (servers, agents) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(OSError, ValueError):
        cap = int(Path("/proc/sys/fs/nr_open").read_text())
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, cap), min(wanted, cap)))
        return min(wanted, cap)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def fd_count(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def tcp_peers(pids: list[int], port: int) -> dict[str, int]:
    """The processes' TCP sockets: clients of the server's ``port``, the bytes queued in the kernel to send
    to them, and connections to the broker (from /proc/net/tcp, matched by socket inode)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    peers = {"client_sockets": 0, "client_send_queue": 0, "broker_sockets": 0}
    with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes and fields[3] != "0A":  # 0A: LISTEN
                if int(fields[1].split(":")[1], 16) == port:
                    peers["client_sockets"] += 1
                    peers["client_send_queue"] += int(fields[4].split(":")[0], 16)
                elif int(fields[2].split(":")[1], 16) == BROKER_PORT:
                    peers["broker_sockets"] += 1
    return peers


def snapshot(server: Server, sockets: bool = False) -> dict[str, Any]:
    """RSS of the master and workers (KiB), the workers' RSS and open fds, who the workers are; with
    ``sockets``, how many of those fds are client sockets and how many broker connections."""
    workers = children(server.process.pid)
    shot = {"rss_total_kib": rss_kib(server.process.pid) + sum(rss_kib(p) for p in workers),
            "rss_workers_kib": sum(rss_kib(p) for p in workers), "fds": sum(fd_count(p) for p in workers),
            "workers": sorted(workers)}
    if sockets:
        shot.update(tcp_peers(workers, server.port))
    return shot


def healthz(port: int) -> float | None:
    """Milliseconds for ``GET /healthz`` over a new connection (None: failed or not 200 within 5 s)."""
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    return (time.monotonic() - started) * 1000 if response.status == 200 else None


class Timeline:
    """Two threads: ``/healthz`` latency and the servers' total RSS, every ``interval`` s, tagged with the phase."""

    def __init__(self, server: Server, interval: float = 0.2) -> None:
        self.server, self.interval, self.phase = server, interval, "idle"
        self.start = time.monotonic()
        self.health: list[tuple[float, str, float | None]] = []
        self.rss: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(f,), daemon=True)
                         for f in (self._health, self._rss)]

    def run(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(10)

    def _loop(self, sample: Callable[[], None]) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _health(self) -> None:
        phase, at = self.phase, time.monotonic() - self.start
        self.health.append((at, phase, healthz(self.server.port)))

    def _rss(self) -> None:
        self.rss.append((time.monotonic() - self.start, self.phase, snapshot(self.server)["rss_total_kib"]))

    def latencies(self, phase: str | None = None) -> tuple[list[float], int]:
        """The phase's (or every) answered samples, and how many failed."""
        rows = [ms for _, p, ms in self.health if phase is None or p == phase]
        return [ms for ms in rows if ms is not None], sum(ms is None for ms in rows)


class Agents:
    """The client processes; ``call`` sends one command to each and waits (bounded) for every answer."""

    def __init__(self, count: int, impl: str, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=conn_agent.main, args=(child, index, impl, port), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def __len__(self) -> int:
        return len(self.pipes)

    def call(self, op: str, within: float, kwargs: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
        """``kwargs[i]`` to agent *i* (None: that agent sits out); answers in order, within the phase's budget."""
        busy = [(pipe, args) for pipe, args in zip(self.pipes, kwargs, strict=True) if args is not None]
        for pipe, args in busy:
            pipe.send((op, args))
        deadline = time.monotonic() + within + 30  # the agents honour their own timeouts first
        answers = []
        for pipe, _ in busy:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise PhaseDeadline(f"{op}: no answer from the load client in {within + 30:.0f} s")
            answer: dict[str, Any] = pipe.recv()
            if "error" in answer:
                raise RuntimeError(f"load client, {op}: {answer['error']}")
            answers.append(answer)
        return answers

    def one(self, index: int, op: str, within: float, **kwargs: Any) -> dict[str, Any]:
        return self.call(op, within, [kwargs if i == index else None for i in range(len(self))])[0]

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit", {}))
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


# ---------------------------------------------------------------------------- one case


EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout)): ?(.{0,120})")
WARNING = re.compile(r" WARNING \[\d+\] ([\w.]+): (\D{0,60})")


def log_summary(path: Path) -> dict[str, Any]:
    """What the servers logged that a reader of the table should know: tracebacks, the commonest exceptions
    and warnings (numbers stripped, so alike lines count together), and the log's size."""
    exceptions: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    tracebacks = 0
    with contextlib.suppress(OSError), path.open(errors="replace") as log:
        for line in log:
            if line.startswith("Traceback"):
                tracebacks += 1
            elif match := EXCEPTION.match(line):
                exceptions[re.sub(r"\d+(\.\d+)?", "N", f"{match[1]}: {match[2]}".strip())] += 1
            elif match := WARNING.search(line):
                warnings[f"{match[1]}: {match[2].strip()}"] += 1
    size = path.stat().st_size if path.exists() else 0
    return {"bytes": size, "tracebacks": tracebacks, "exceptions": dict(exceptions.most_common(5)),
            "warnings": dict(warnings.most_common(5))}


def seed(server: Server, names: list[str]) -> list[str]:
    """Accounts and sessions in the service's store, a day-long token each, in batches."""
    long_lived = replace(server, env={**server.env, "APP_TOKEN_TTL_SECONDS": "86400"})
    tokens: list[str] = []
    for start in range(0, len(names), SEED_BATCH):
        tokens += seed_accounts(long_lived, names[start:start + SEED_BATCH])
    if len(tokens) != len(names):
        raise RuntimeError(f"seeding made {len(tokens)} tokens for {len(names)} names")
    return tokens


@dataclass
class Case:
    """What one case's phases share."""

    server: Server
    agents: Agents
    timeline: Timeline
    report: Report
    args: argparse.Namespace
    deadline: float

    def budget(self, phase: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PhaseDeadline("the case's deadline")
        return min(phase, left)

    def split(self, cids: range | list[int]) -> list[list[int]]:
        return [[c for c in cids if c % len(self.agents) == i] for i in range(len(self.agents))]

    def phase(self, name: str) -> None:
        """Tags the samples from now on (after counting what the server closed in the last phase); a progress
        line on stderr."""
        self.tally()
        self.timeline.phase = name
        at = time.monotonic() - self.timeline.start
        print(f"[{self.report.impl} +{at:.0f}s] {name}", file=sys.stderr, flush=True)

    def tally(self) -> None:
        """Sockets the server closed unasked, and error frames, since the last tally: by phase, and in all."""
        answers = self.agents.call("counters", 30, [{}] * len(self.agents))
        closes, errors = merge([a["closes"] for a in answers]), merge([a["errors"] for a in answers])
        if closes:
            self.report.dropped_by_phase[self.timeline.phase] = closes
        self.report.dropped = merge([self.report.dropped, closes])
        self.report.error_frames = merge([self.report.error_frames, errors])

    def settle(self, seconds: float = 3.0) -> dict[str, Any]:
        time.sleep(seconds)
        return snapshot(self.server, sockets=True)


def mib(kib: float) -> float:
    return kib / 1024


def connect_phase(case: Case, tokens: list[str | None], rooms: list[str]) -> None:
    rep, args, agents = case.report, case.args, case.agents
    case.phase("connect")
    per_agent = [{"clients": [(c, tokens[c], [rooms[c % len(rooms)]]) for c in cids],
                  "at_once": max(1, args.at_once // len(agents)), "timeout": 30.0}
                 for cids in case.split(range(args.clients))]
    answers = agents.call("connect", case.budget(args.phase_deadline), per_agent)
    rep.connected = sum(a["ok"] for a in answers)
    rep.connect_failures = merge([a["failures"] for a in answers])
    span = max(a["end"] for a in answers) - min(a["start"] for a in answers)
    rep.connect_rate = rep.connected / span if span > 0 else 0.0
    rep.client_cpu_pct = max(100 * a["cpu"] / a["wall"] for a in answers if a["wall"] > 0)
    after = case.settle()
    rep.leak["connected"] = after
    rep.rss_connected_mib = mib(after["rss_total_kib"])
    base = rep.leak["baseline"]["rss_total_kib"]
    rep.kib_per_conn = (after["rss_total_kib"] - base) / rep.connected if rep.connected else 0.0


def big_room_phase(case: Case, big: str) -> None:
    rep, args, agents = case.report, case.args, case.agents
    case.phase("big room")
    per_agent = [{"cids": cids, "room": big, "at_once": max(1, args.at_once // len(agents)), "timeout": 60.0}
                 for cids in case.split(range(rep.big_room))]
    answers = agents.call("join", case.budget(args.phase_deadline), per_agent)
    rep.big_joined = sum(a["ok"] for a in answers)
    span = max(a["end"] for a in answers) - min(a["start"] for a in answers)
    rep.big_join_rate = rep.big_joined / span if span > 0 else 0.0
    after = case.settle()
    rep.leak["big room"] = after
    rep.rss_big_mib = mib(after["rss_total_kib"])


def broadcast_phase(case: Case, big: str) -> None:
    rep, args, agents = case.report, case.args, case.agents
    case.phase("broadcast")
    latencies: list[float] = []
    for n in range(args.broadcasts):
        agents.one(0, "say", case.budget(30), cid=None, room=big, texts=[f"{conn_agent.BROADCAST}{n}:{{t}}"])
        answers = agents.call("collect", case.budget(60), [{"n": n, "room": big, "timeout": 60.0}] * len(agents))
        rep.bc_expected += sum(a["expected"] for a in answers)
        got = [ms * 1000 for a in answers for ms in a["latencies"]]
        rep.bc_received += len(got)
        latencies += got
        time.sleep(1.0)
    rep.bc_p50_ms, rep.bc_p99_ms = percentile(latencies, 0.5), percentile(latencies, 0.99)
    rep.bc_max_ms = max(latencies, default=0.0)


def storm_phase(case: Case, n: int) -> None:
    rep, args, agents = case.report, case.args, case.agents
    case.phase(f"storm {n}")
    before = snapshot(case.server)["workers"]
    per_agent = [{"cids": cids, "timeout": float(args.storm_deadline), "attempt_timeout": args.attempt_timeout}
                 for cids in case.split(range(args.clients - rep.storm, args.clients))]
    answers = agents.call("storm", case.budget(args.storm_deadline), per_agent)
    after = case.settle()
    failures = merge([a["failures"] for a in answers])
    rep.storms.append({
        "seconds": max(a["end"] for a in answers) - min(a["start"] for a in answers),
        "clients": sum(a["clients"] for a in answers), "dropped": sum(a["dropped"] for a in answers),
        "back": sum(a["back"] for a in answers),
        "refused": sum(v for k, v in failures.items() if k.startswith("refused")),
        "failed": sum(v for k, v in failures.items() if k.startswith("failed")), "failures": failures,
        "workers_restarted": len(set(before) - set(after["workers"])),
        "client_cpu_pct": max(100 * a["cpu"] / a["wall"] for a in answers if a["wall"] > 0),
    })
    rep.leak[f"storm {n}"] = after


def slow_phase(case: Case, tokens: list[str | None], room: str) -> None:
    """Slow readers join ``room`` and stop reading; a client of its own (a reader) sends the burst there."""
    rep, args, agents = case.report, case.args, case.agents
    case.phase("slow readers")
    cid = args.clients + rep.slow
    sender = cid % len(agents)
    joined = agents.one(sender, "connect", case.budget(60), clients=[(cid, tokens[cid], [room])], at_once=1,
                        timeout=30.0)
    if joined["ok"] != 1:
        raise RuntimeError(f"the burst's sender did not connect: {joined['failures']}")
    slow = range(args.clients, args.clients + rep.slow)
    per_agent = [{"clients": [(c, tokens[c], [room]) for c in cids], "at_once": max(1, args.at_once // len(agents)),
                  "timeout": 30.0, "rcvbuf": 4096, "pause": True} for cids in case.split(slow)]
    answers = agents.call("connect", case.budget(args.phase_deadline), per_agent)
    held = sum(a["ok"] for a in answers)
    before = case.settle(2.0)
    texts = [f"{conn_agent.BURST}{i}:".ljust(args.burst_text, "x") for i in range(args.burst)]
    agents.one(sender, "say", case.budget(60), cid=cid, room=room, texts=texts, rate=args.burst_rate)
    peak, queued = before["rss_total_kib"], before["client_send_queue"]
    until, sent_out = time.monotonic() + case.budget(args.slow_wait), None
    while time.monotonic() < until:
        # the peaks, until the server closed every slow socket, or 2 s after the whole burst went out (the sender
        # read it back), or the wait ends
        now = snapshot(case.server, sockets=True)
        peak, queued = max(peak, now["rss_total_kib"]), max(queued, now["client_send_queue"])
        if now["client_sockets"] <= before["client_sockets"] - held:
            break
        if sent_out is None and agents.one(sender, "progress", 10)["burst_seen"] >= args.burst:
            sent_out = time.monotonic()
        if sent_out is not None and time.monotonic() - sent_out > 2:
            break
        time.sleep(0.2)
    rep.burst_read_back = agents.one(sender, "progress", 10)["burst_seen"]
    rep.slow_rss_kib = (peak - before["rss_total_kib"]) / held if held else 0.0
    rep.slow_kernel_kib = (queued - before["client_send_queue"]) / 1024 / held if held else 0.0
    answers = agents.call("resume", case.budget(60), [{"cids": cids, "timeout": 30.0} for cids in case.split(slow)])
    rep.slow_closed = merge([a["closed"] for a in answers])
    rep.slow_open = sum(a["open"] for a in answers)
    agents.call("close_all", case.budget(60), [{"timeout": 10.0, "cids": cids + ([cid] if i == sender else [])}
                                               for i, cids in enumerate(case.split(slow))])


def drive(case: Case, tokens: list[str | None]) -> None:
    rep, args = case.report, case.args
    run = uuid.uuid4().hex[:6]
    rooms = [f"r{run}-{i}" for i in range(args.rooms)]
    case.timeline.run()
    rep.leak["baseline"] = case.settle(2.0)
    rep.rss_baseline_mib = mib(rep.leak["baseline"]["rss_total_kib"])
    connect_phase(case, tokens, rooms)
    if rep.big_room:
        big_room_phase(case, f"big{run}")
        if args.broadcasts:
            broadcast_phase(case, f"big{run}")
    if rep.slow:  # before the storms: on a server that a storm may have left behind, it would measure that
        slow_phase(case, tokens, f"slow{run}")
    for n in range(1, args.storms + 1 if rep.storm else 1):
        storm_phase(case, n)
    case.phase("close")
    case.agents.call("close_all", case.budget(60), [{"timeout": 10.0}] * len(case.agents))
    rep.leak["closed"] = case.settle(3.0)


def run_case(impl: str, baked: Path, args: argparse.Namespace) -> Report:
    """One implementation, bounded by ``args.deadline``; its servers and clients are stopped whatever happens."""
    rep = Report(impl, args.clients, args.workers, args.rooms, min(args.big_room, args.clients),
                 min(args.storm, args.clients), args.slow, args.burst, args.agents)
    prefix = f"conn{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + args.deadline
    server = start_server(impl, args.workers, prefix, args.peers_python, baked)
    agents: Agents | None = None
    timeline = Timeline(server)
    try:
        tokens: list[str | None] = [None] * (args.clients + args.slow + 1)  # + the burst's sender
        if impl == "ours":
            began = time.monotonic()
            tokens[:] = seed(server, [f"u{prefix}-{i}" for i in range(len(tokens))])
            rep.seed_s = time.monotonic() - began
        agents = Agents(args.agents, impl, server.port)
        drive(Case(server, agents, timeline, rep, args, deadline), tokens)
    except PhaseDeadline as exc:
        rep.status = f"deadline ({exc}) in phase {timeline.phase}"
    except Exception as exc:  # reported in the table
        rep.status = f"error in phase {timeline.phase}: {type(exc).__name__}: {exc}"[:300]
    finally:
        timeline.stop()
        if agents is not None:
            agents.close()
        server.kill()
        rep.server_log = log_summary(server.log)
        if not args.keep_logs:
            server.log.unlink(missing_ok=True)
        cleanup_redis(prefix)
        for path in Path(tempfile.gettempdir()).glob(f"{database(prefix).name}*"):
            path.unlink(missing_ok=True)
    answered, failed = timeline.latencies()
    rep.healthz_p50_ms, rep.healthz_max_ms = percentile(answered, 0.5), max(answered, default=0.0)
    rep.healthz_failed = failed
    for phase in dict.fromkeys(p for _, p, _ in timeline.health):
        ms, bad = timeline.latencies(phase)
        rep.healthz_by_phase[phase] = {"p50": percentile(ms, 0.5), "max": max(ms, default=0.0), "failed": bad,
                                       "samples": len(ms) + bad}
    rep.timeline = {"health": [(round(t, 2), p, None if ms is None else round(ms, 1)) for t, p, ms in timeline.health],
                    "rss": [(round(t, 2), p, kib) for t, p, kib in timeline.rss]}
    return rep


def measured_commit() -> str:
    """The template's HEAD, marked when the generated project has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=TEMPLATE, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--", "{{cookiecutter.project_slug}}")
                   else "")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", default=",".join(IMPLS))
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--storm", type=int, default=10_000, help="clients that drop and reconnect at once")
    parser.add_argument("--storms", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--big-room", type=int, default=10_000, help="members of the broadcast room")
    parser.add_argument("--broadcasts", type=int, default=3)
    parser.add_argument("--slow", type=int, default=200, help="clients that never read")
    parser.add_argument("--burst", type=int, default=2000, help="messages to the slow readers' room")
    parser.add_argument("--burst-text", type=int, default=4000, help="characters per burst message (≤ 4,000)")
    parser.add_argument("--burst-rate", type=float, default=800.0,
                        help="burst messages per second (under ours' raised rate limit of 1,000/s)")
    parser.add_argument("--slow-wait", type=float, default=60.0, help="max seconds to watch the slow readers")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agents", type=int, default=2, help="client processes")
    parser.add_argument("--at-once", type=int, default=100, help="sockets connecting at a time (all agents)")
    parser.add_argument("--phase-deadline", type=float, default=600.0)
    parser.add_argument("--storm-deadline", type=float, default=120.0)
    parser.add_argument("--attempt-timeout", type=float, default=20.0,
                        help="seconds one storm reconnect may take before it is dropped and retried")
    parser.add_argument("--deadline", type=float, default=3000.0, help="max seconds per implementation")
    parser.add_argument("--project", type=Path, help="a baked copy of the template (default: bake one)")
    parser.add_argument("--peers-python", default=PEERS_PYTHON)
    parser.add_argument("--no-setup", action="store_true", help="never create the peers' virtualenv")
    parser.add_argument("--out", default=str(TEMPLATE / "docs" / "benchmarks" / "connections.md"),
                        help="the report (markdown; .json and .png beside it); '' writes none")
    parser.add_argument("--json", type=Path, help="the reports as JSON (default: beside --out)")
    parser.add_argument("--from-json", type=Path, help="run nothing: write --out (and its plot) from a run's JSON")
    parser.add_argument("--note", default="")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (default: summarised)")
    parser.add_argument("--commit", help="what the report names as measured (default: the template's HEAD)")
    return parser


def stored_args(parser: argparse.ArgumentParser, stored: dict[str, str]) -> argparse.Namespace:
    """A run's arguments back from its JSON (kept as text), typed by the parser."""
    argv: list[str] = []
    for action in parser._actions:
        value = stored.get(action.dest)
        if value is None or value == "None" or not action.option_strings or action.dest in ("help", "from_json"):
            continue
        if action.nargs == 0:  # a flag
            argv += [action.option_strings[0]] if value == "True" else []
        else:
            argv += [action.option_strings[0], value]
    return parser.parse_args(argv)


def write(reports: list[Report], args: argparse.Namespace, started: str, commit: str) -> None:
    """The markdown report and its plot at ``args.out``."""
    command = "python -m bench.connections " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k in ("impl", "clients", "storm", "big_room", "slow", "burst", "agents") and v is not None)
    doc = document(reports, args, command, started, commit)
    if args.note:
        doc += [args.note, ""]
    picture = plot(reports, Path(args.out).with_suffix(".png"))
    if picture is not None:
        doc += [f"![RSS and /healthz over the phases, and the headline figures]({picture.name})", ""]
    Path(args.out).write_text("\n".join(doc))


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    if not 10 <= args.burst_text <= 4000:
        parser.error("--burst-text: 10 to 4,000 characters (the protocol's limit)")
    if args.from_json:
        payload = json.loads(args.from_json.read_text())
        again = stored_args(parser, payload["args"])
        again.out, again.note = args.out, args.note or again.note
        reports = [Report(**r) for r in payload["reports"]]
        print(table(reports))
        if args.out:
            write(reports, again, payload["started"], args.commit or payload["commit"])
        return

    limit = raise_nofile()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = args.commit or measured_commit()
    impls = args.impl.split(",")
    if "socketio" in impls and not Path(args.peers_python).exists():
        peers_python(Path(args.peers_python).parent.parent, create=not args.no_setup)
    reports = []
    with project(args.project) as baked:
        for impl in impls:
            rep = run_case(impl, baked, args)
            summary = {k: v for k, v in rep.__dict__.items() if k != "timeline"}
            print(json.dumps(summary), flush=True)
            reports.append(rep)
    print(table(reports))
    payload = {"started": started, "commit": commit, "nofile": limit, "reports": [r.__dict__ for r in reports],
               "args": {k: str(v) for k, v in vars(args).items()}}
    json_path = args.json or (Path(args.out).with_suffix(".json") if args.out else None)
    if json_path is not None:
        json_path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")  # one line: the timelines are long
    if args.out:
        write(reports, args, started, commit)


if __name__ == "__main__":
    main()
