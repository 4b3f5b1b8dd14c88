"""What a worker process holds: resident memory and open file descriptors (read from /proc, Linux only)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_peers(pid: int) -> set[int]:
    """Remote ports of the TCP sockets ``pid`` holds open."""
    return {remote for _, remote in tcp_sockets(pid)}


def tcp_sockets(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of each IPv4 TCP socket ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: list[tuple[int, int]] = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            found.append((int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)))
    return found


def local_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])
