"""What a bench/connections.py run produced, and how it reads: the report of one implementation, the table
(ours beside python-socketio, with the issue's goals and the ratios), the plot and the markdown page.

Apart from the run so the phases stay readable; ``python -m bench.connections --from-json`` uses only this.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABELS = {"ours": "ours", "socketio": "python-socketio"}


@dataclass
class Report:
    """One implementation's figures; plain numbers and small dicts, so its JSON is the whole report."""

    impl: str
    clients: int
    workers: int
    rooms: int
    big_room: int
    storm: int
    slow: int
    burst: int
    agents: int
    status: str = "ok"
    seed_s: float = 0.0
    connected: int = 0
    connect_failures: dict[str, int] = field(default_factory=dict)
    connect_rate: float = 0.0
    client_cpu_pct: float = 0.0  # the busiest agent, during connect: near 100 means the client is the limit
    big_joined: int = 0
    big_join_rate: float = 0.0
    rss_baseline_mib: float = 0.0
    rss_connected_mib: float = 0.0
    rss_big_mib: float = 0.0
    kib_per_conn: float = 0.0
    healthz_p50_ms: float = 0.0
    healthz_max_ms: float = 0.0
    healthz_failed: int = 0
    healthz_by_phase: dict[str, dict[str, float]] = field(default_factory=dict)
    bc_expected: int = 0
    bc_received: int = 0
    bc_p50_ms: float = 0.0
    bc_p99_ms: float = 0.0
    bc_max_ms: float = 0.0
    storms: list[dict[str, Any]] = field(default_factory=list)
    slow_rss_kib: float = 0.0  # growth of the servers' RSS at its peak during the burst, per slow socket
    slow_kernel_kib: float = 0.0  # the same of the bytes the kernel queued to send to them
    burst_read_back: int = 0  # burst messages the sender (a reader) got back by the end of the watch
    slow_closed: dict[str, int] = field(default_factory=dict)
    slow_open: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # sockets the server closed unasked, by code
    dropped_by_phase: dict[str, dict[str, int]] = field(default_factory=dict)
    error_frames: dict[str, int] = field(default_factory=dict)
    leak: dict[str, dict[str, Any]] = field(default_factory=dict)
    server_log: dict[str, Any] = field(default_factory=dict)  # tracebacks, exceptions, warnings (log_summary)
    timeline: dict[str, list[Any]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def merge(counters: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


#: (what, the issue's goal, value of a report: a number for the ratio, or None, and its text)
Row = tuple[str, str, Callable[[Report], tuple[float | None, str]]]


def num(value: float, fmt: str = "{:,.0f}") -> tuple[float, str]:
    return value, fmt.format(value)


def storms_text(rep: Report, key: str, fmt: str = "{:,.0f}") -> tuple[float | None, str]:
    values = [s[key] for s in rep.storms]
    if not values:
        return None, "—"
    return max(values), " / ".join(fmt.format(v) for v in values)


def storm_seconds(rep: Report) -> tuple[float | None, str]:
    if not rep.storms:
        return None, "—"
    texts = [("> " if s["back"] < s["clients"] else "") + f"{s['seconds']:.1f}" for s in rep.storms]
    return max(s["seconds"] for s in rep.storms), " / ".join(texts)


def leak_text(rep: Report, key: str, scale: float = 1.0) -> tuple[float | None, str]:
    order = ["baseline", "connected", "big room", *[f"storm {n}" for n in range(1, len(rep.storms) + 1)], "closed"]
    values = [rep.leak[k][key] / scale for k in order if key in rep.leak.get(k, {})]
    return None, " → ".join(f"{v:,.0f}" for v in values) if values else "—"


def log_text(rep: Report) -> str:
    log = rep.server_log
    if not log:
        return "—"
    top = next(iter(log.get("exceptions", {}).items()), None)
    return f"{log['tracebacks']:,}" + (f" ({top[0]} × {top[1]:,})" if top else "")


def slow_text(rep: Report) -> str:
    if not rep.slow:
        return "—"
    codes = ", ".join(f"code {k}: {v}" for k, v in rep.slow_closed.items())
    return f"{sum(rep.slow_closed.values()):,}" + (f" ({codes})" if codes else "") + f" / {rep.slow_open:,}"


ROWS: list[Row] = [
    ("connections held", "20,000", lambda r: num(r.connected, "{:,.0f} of " + f"{r.clients:,}")),
    ("connect rate, sockets/s (connect + auth + join, 100 at a time)", "", lambda r: num(r.connect_rate)),
    ("big room: members joined, joins/s", "10,000", lambda r: (r.big_join_rate,
                                                              f"{r.big_joined:,} of {r.big_room:,}, "
                                                              f"{r.big_join_rate:,.0f}/s")),
    ("server RSS at baseline, MiB", "", lambda r: num(r.rss_baseline_mib, "{:,.1f}")),
    ("server RSS, all connected, MiB", "≤ 600", lambda r: num(r.rss_connected_mib, "{:,.1f}")),
    ("server RSS, with the big room, MiB", "≤ 600", lambda r: num(r.rss_big_mib, "{:,.1f}")),
    ("RSS per idle connection, KiB", "≤ 30", lambda r: num(r.kib_per_conn, "{:,.1f}")),
    ("/healthz p50 / max, ms (every phase)", "< 100",
     lambda r: (r.healthz_max_ms, f"{r.healthz_p50_ms:.1f} / {r.healthz_max_ms:,.0f}"
                                  + (f", {r.healthz_failed} failed" if r.healthz_failed else ""))),
    ("broadcast to the big room: received / expected", "all",
     lambda r: (None, f"{r.bc_received:,} / {r.bc_expected:,}")),
    ("broadcast latency p50 / p99 / max, ms", "p99 ≤ 1,000",
     lambda r: (r.bc_p99_ms, f"{r.bc_p50_ms:,.0f} / {r.bc_p99_ms:,.0f} / {r.bc_max_ms:,.0f}")),
    ("storm: seconds until all back (each storm; >: not all were)", "≤ 15", storm_seconds),
    ("storm: back of clients (each storm)", "all", lambda r: (None, " / ".join(f"{s['back']:,} of {s['clients']:,}"
                                                                                for s in r.storms) or "—")),
    ("storm: attempts refused (each storm)", "0", lambda r: storms_text(r, "refused")),
    ("storm: attempts failed (each storm)", "0", lambda r: storms_text(r, "failed")),
    ("storm: workers restarted", "0", lambda r: storms_text(r, "workers_restarted")),
    ("slow readers: server RSS per slow socket, KiB", "bounded", lambda r: num(r.slow_rss_kib, "{:,.1f}")),
    ("slow readers: server kernel send queue per slow socket, KiB", "", lambda r: num(r.slow_kernel_kib, "{:,.0f}")),
    ("slow readers: closed by the server / still open", "",
     lambda r: (None, slow_text(r))),
    ("workers' RSS MiB: baseline → connected → big room → storms → closed", "back to baseline",
     lambda r: leak_text(r, "rss_workers_kib", 1024)),
    ("workers' open fds: same points", "back to baseline", lambda r: leak_text(r, "fds")),
    ("… of which broker (Redis) connections", "", lambda r: leak_text(r, "broker_sockets")),
    ("sockets the server closed unasked (phase: code × count)", "",
     lambda r: (None, "; ".join(f"{phase}: " + ", ".join(f"{k} × {v:,}" for k, v in codes.items())
                                for phase, codes in r.dropped_by_phase.items()) or "none")),
    ("server log: tracebacks (commonest exception)", "0", lambda r: (None, log_text(r))),
    ("client CPU, % of a core (busiest agent): connect / each storm", "",
     lambda r: (r.client_cpu_pct, " / ".join(f"{v:.0f}" for v in [r.client_cpu_pct,
                                                                  *[s.get("client_cpu_pct", 0) for s in r.storms]]))),
    ("status", "", lambda r: (None, r.status)),
]


def table(reports: list[Report]) -> str:
    """One row per measure: each implementation side by side, then ours ÷ python-socketio where it is a number."""
    ours = next((r for r in reports if r.impl == "ours"), None)
    base = next((r for r in reports if r.impl == "socketio"), None)
    heads = [LABELS.get(r.impl, r.impl) for r in reports]
    lines = ["| measure | goal (issue 21) | " + " | ".join(heads) + " | ours ÷ python-socketio |",
             "|---|---|" + "---|" * len(reports) + "---|"]
    for label, goal, value in ROWS:
        cells = [value(r) for r in reports]
        ratio = "—"
        if ours is not None and base is not None:
            a, b = value(ours)[0], value(base)[0]
            if a is not None and b:
                ratio = f"{a / b:.2g}x"
        lines.append(f"| {label} | {goal} | " + " | ".join(text.replace("|", "\\|") for _, text in cells)
                     + f" | {ratio} |")
    return "\n".join(lines)


def plot(reports: list[Report], path: Path) -> Path | None:
    """RSS and /healthz over the run's phases, and the headline figures side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), layout="constrained")
    for n, rep in enumerate(reports):
        color, label = f"C{n}", LABELS.get(rep.impl, rep.impl)
        rss = rep.timeline.get("rss", [])
        axes[0][0].plot([t for t, _, _ in rss], [kib / 1024 for _, _, kib in rss], color=color, label=label)
        seen: set[str] = set()
        for t, phase, _ in rss:
            if phase not in seen:
                seen.add(phase)
                axes[0][0].axvline(t, color=color, alpha=0.25, linewidth=0.8)
                axes[0][0].text(t, 0.01, f" {phase}", rotation=90, fontsize=6, color=color, va="bottom",
                                transform=axes[0][0].get_xaxis_transform())
        health = rep.timeline.get("health", [])
        axes[0][1].scatter([t for t, _, ms in health if ms is not None], [ms for _, _, ms in health if ms is not None],
                           s=3, color=color, label=label)
        failed = [t for t, _, ms in health if ms is None]
        if failed:
            axes[0][1].scatter(failed, [5000] * len(failed), marker="x", color=color, s=12)
    axes[0][0].set(title="server RSS (master + workers), MiB", xlabel="s since the first phase")
    axes[0][1].set(title="/healthz latency, ms (x: failed)", xlabel="s", yscale="log")
    axes[0][1].axhline(100, color="grey", linestyle="--", linewidth=0.8)
    for axis in axes[0][:2]:
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    names = [LABELS.get(r.impl, r.impl) for r in reports]
    colors = [f"C{n}" for n in range(len(reports))]
    bars = [(axes[0][2], [r.kib_per_conn for r in reports], "RSS per idle connection, KiB (goal ≤ 30)", 30.0),
            (axes[1][0], [r.connect_rate for r in reports], "connect + auth + join, sockets/s", None)]
    for axis, values, title, goal in bars:
        axis.bar(names, values, color=colors)
        axis.set_title(title)
        if goal:
            axis.axhline(goal, color="grey", linestyle="--", linewidth=0.8)
    width = 0.8 / max(1, len(reports))
    for n, rep in enumerate(reports):
        xs = [i + (n - (len(reports) - 1) / 2) * width for i in range(len(rep.storms))]
        axes[1][1].bar(xs, [s["seconds"] for s in rep.storms], width, color=colors[n], label=names[n],
                       hatch=["//" if s["back"] < s["clients"] else "" for s in rep.storms], edgecolor="black",
                       linewidth=0.5)
        axes[1][2].bar([i + (n - (len(reports) - 1) / 2) * width for i in range(3)],
                       [rep.bc_p50_ms, rep.bc_p99_ms, rep.bc_max_ms], width, color=colors[n], label=names[n])
    axes[1][1].set(title=f"storm of {reports[0].storm:,}: s until all back (goal ≤ 15)",
                   xlabel="storm (hatched: not all were back at the deadline)")
    storms = max((len(r.storms) for r in reports), default=0)
    axes[1][1].set_xticks(range(storms), [str(n + 1) for n in range(storms)])
    axes[1][1].axhline(15, color="grey", linestyle="--", linewidth=0.8)
    axes[1][2].set(title=f"broadcast to {reports[0].big_room:,}, ms (goal p99 ≤ 1,000)")
    axes[1][2].set_xticks(range(3), ["p50", "p99", "max"])
    axes[1][2].axhline(1000, color="grey", linestyle="--", linewidth=0.8)
    for axis in (axes[1][1], axes[1][2]):
        axis.legend(fontsize=8)
    for axis in (*axes[0][2:], *axes[1]):
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{reports[0].clients:,} connections, {reports[0].workers} workers, Redis, one 2-core host")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def document(reports: list[Report], args: argparse.Namespace, command: str, started: str, commit: str) -> list[str]:
    return [
        "# Connection scale benchmark (issue 21)", "",
        f"Run {started} on {os.cpu_count()} cores, template commit {commit}"
        + (f" (measured `--project {args.project}`)" if args.project else "") + f": `{command}`.", "",
        "Servers: 2 gunicorn workers on Redis each (ours: a bake of the template, SQLite store, rate and "
        "handshake limits raised as in bench/ws_load.py; python-socketio: `bench/peers/socketio_app.py`, "
        "AsyncRedisManager, uvicorn workers, WebSocket transport). Clients: "
        f"{args.agents} processes of raw asyncio sockets (bench/wsclient.py) from 127.0.0.2–9, on the same cores.",
        "",
        "- **connections held / connect rate**: sockets that connected, authenticated (ours: `auth` frame) and "
        f"joined their room (client *i* in room *i* mod {args.rooms}), {args.at_once} connecting at a time; rate = "
        "sockets ÷ the phase's wall time. **big room**: the first clients then join one more room, the same way.",
        "- **server RSS**: gunicorn master + workers (VmRSS), 3 s after each phase; **per idle connection**: growth "
        "over the baseline ÷ connections held.",
        "- **/healthz**: a new HTTP connection from the controller every ~200 ms through every phase (a "
        "failure: no 200 within 5 s).",
        f"- **broadcast**: {args.broadcasts} messages, one at a time, from one member to the big room; latency per "
        "member from the send to its read (one monotonic clock).",
        "- **storm**: the last clients drop their sockets (RST) all at once and reconnect all at once (ours: auth + "
        "join with `since` = the last seq seen; socket.io: connect + join), each retrying with the page's backoff "
        "(app.js: 0.25 s doubling to 10 s, jittered; a refusal is retried too), an attempt given up after "
        f"{args.attempt_timeout:.0f} s; seconds until the last is back (the phase ends at "
        f"{args.storm_deadline:.0f} s); refused = the server said no (a close code, an HTTP status, "
        "ECONNREFUSED), failed = timeout or reset; workers restarted = worker pids that changed.",
        f"- **slow readers**: {args.slow:,} more clients with a 4 KiB receive buffer stop reading, in a room "
        f"that then gets {args.burst:,} messages of {args.burst_text} characters ({args.burst_rate:.0f}/s, from a "
        "member that reads); RSS per slow socket = the servers' peak RSS growth ÷ slow sockets (and the same of "
        "the bytes the server's kernel queued for them), until the server closed them all (ours: 1013, or an "
        f"abort), or 2 s after the sender read the whole burst back, or {args.slow_wait:.0f} s; closed by the "
        "server = what the clients find when they read again.",
        "- **leaks**: the workers' RSS, open fds and broker connections at baseline, connected, with the big room, "
        "after each storm, and 3 s after every client closed.",
        "- **server log**: tracebacks the servers logged, and the commonest exception (numbers as N).",
        "- Phases run in this order: connect, big room, broadcast, slow readers (their sockets closed after), "
        "storms, close.", "",
        table(reports), "",
        *(["Failures: " + "; ".join(f"{LABELS.get(r.impl, r.impl)} connect {r.connect_failures}"
                                    for r in reports if r.connect_failures), ""]
          if any(r.connect_failures for r in reports) else []),
        "/healthz by phase (p50 / max ms, failed):", "",
        *[f"- {LABELS.get(r.impl, r.impl)}: " + "; ".join(
            f"{phase} {v['p50']:.0f} / {v['max']:,.0f}" + (f", {v['failed']:.0f} failed" if v["failed"] else "")
            for phase, v in r.healthz_by_phase.items()) for r in reports], "",
    ]
