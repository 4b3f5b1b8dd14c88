"""Hosts on one machine: network namespaces joined by veth pairs to a bridge in a switch namespace.

Every address lives inside namespaces this module creates (``10.251.<n>.0/24`` on the veth ends,
no default route), so nothing a test starts can reach, or be reached from, any other network.
``Network`` removes its namespaces, and kills what runs in them, however the test ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


def require_namespaces() -> None:
    """Skip where namespaces cannot be made (not root, no iproute2); fail instead under CI=true."""
    reason = None
    if os.geteuid() != 0:
        reason = "network namespaces need root"
    elif not os.access(IP, os.X_OK):
        reason = "iproute2's ip is not installed"
    else:
        probe = f"fwsprobe{secrets.token_hex(3)}"
        made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True, timeout=10)
        if made.returncode != 0:
            reason = f"ip netns add failed: {made.stderr.strip()}"
        else:
            _ip("netns", "del", probe)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the multi-host tests must not skip)")
    pytest.skip(reason)


@dataclass
class Host:
    """One namespace with one interface (``eth0``) on the shared bridge."""

    name: str
    ns: str
    address: str
    switch_port: str
    switch_ns: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, args: Sequence[str], user: str | None = None) -> list[str]:
        prefix = [IP, "netns", "exec", self.ns]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        return [*prefix, *args]

    def run(self, args: Sequence[str], *, log: Path, user: str | None = None, **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``args`` in this host, its output appended to ``log``; killed with the network."""
        with log.open("ab") as out:
            process = subprocess.Popen(self.command(args, user), stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, **popen)
        self.processes.append(process)
        return process

    def check(self, args: Sequence[str], *, timeout: float, user: str | None = None,
              stdin: IO[bytes] | None = None, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in this host to completion; raises with its output if it fails."""
        done = subprocess.run(self.command(args, user), capture_output=True, text=True, timeout=timeout,
                              stdin=stdin, env=env, cwd=cwd, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} in {self.name} exited {done.returncode}:\n"
                                 f"{done.stdout[-6000:]}\n{done.stderr[-4000:]}")
        return done

    def cut(self) -> None:
        """Take this host off the network (its link down at the switch): a partition, not a crash."""
        _ip("-n", self.switch_ns, "link", "set", self.switch_port, "down")

    def restore(self) -> None:
        _ip("-n", self.switch_ns, "link", "set", self.switch_port, "up")


class Network:
    """A switch namespace with a bridge, and hosts added to it one by one."""

    def __init__(self) -> None:
        self.tag = f"fws{secrets.token_hex(2)}"
        self.subnet = 10 + secrets.randbelow(200)  # 10.251.<subnet>.0/24, inside our namespaces only
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        ns, port = f"{self.tag}-{name}", f"p{index}"
        _ip("netns", "add", ns)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        address = f"10.251.{self.subnet}.{index}"
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host = self.hosts[name] = Host(name, ns, address, port, self.switch)
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            for process in host.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            # anything else left in the namespace (a daemon that forked away from its group)
            pids = subprocess.run([IP, "netns", "pids", host.ns], capture_output=True, text=True, timeout=10)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in [*(host.ns for host in self.hosts.values()), self.switch]:
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def network(*names: str) -> Iterator[Network]:
    require_namespaces()
    net = Network()
    try:
        for name in names:
            net.add(name)
        yield net
    finally:
        net.close()
