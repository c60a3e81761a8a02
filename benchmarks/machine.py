"""Processes and CPU: run a server in a subprocess, and account for who used the CPU.

On a 2-core machine shared with other work, a throughput figure means little without
knowing where the CPU went while it was measured. `CpuTally` sums, over the rounds of one
measurement, the CPU seconds of the processes we run and of the whole machine, so a report
can show the rest as `other`: work that was not ours.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCHMARKS = Path(__file__).resolve().parent
SERVER_START_TIMEOUT_S = 60
IDLE_PCT = 10  # a machine busier than this (% of all cores) before a run is not idle
CPUS = os.cpu_count() or 1


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_pid(pid: int) -> int:
    return int(_stat(pid)[1])


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _ticks_per_second()


def tree_cpu(root: int) -> float:
    """CPU seconds of a process, its live children and the children it has reaped (for
    PostgreSQL: the postmaster and every backend)."""
    ticks = sum(int(v) for v in _stat(root)[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = _stat(int(entry.name))
                if int(child[1]) == root:
                    ticks += int(child[11]) + int(child[12])
    return ticks / _ticks_per_second()


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _ticks_per_second()


def machine_busy(seconds: float = 1.0) -> int:
    """How busy the machine is over `seconds`, in % of all cores."""
    before = machine_cpu()
    time.sleep(seconds)
    return round(100 * (machine_cpu() - before) / (seconds * CPUS))


def wait_idle(limit: float, label: str) -> None:
    """Wait at most `limit` seconds for other processes to leave the machine idle."""
    deadline = time.monotonic() + limit
    while (busy := machine_busy()) > IDLE_PCT:
        if time.monotonic() > deadline:
            print(f"[{label}] still {busy}% busy after {limit:g} s; measuring anyway", flush=True)
            return
        print(f"[{label}] machine {busy}% busy, waiting...", flush=True)


Meters = dict[str, Callable[[], float]]


@dataclass
class CpuTally:
    """CPU seconds per process (and of the whole machine) and wall seconds, over rounds."""

    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    @contextlib.contextmanager
    def measure(self, meters: Meters) -> Iterator[None]:
        """Count what each of `meters` (name -> CPU seconds so far) uses in the block."""
        started = time.monotonic()
        before = {name: read() for name, read in meters.items()}
        machine = machine_cpu()
        yield
        self.wall += time.monotonic() - started
        for name, read in meters.items():
            self.add(name, read() - before[name])
        self.add("machine", machine_cpu() - machine)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def percent(self) -> dict[str, int]:
        """% of one core per process, `machine` (200 = two cores flat out) and `other`."""
        wall = max(self.wall, 1e-9)
        pct = {name: round(100 * s / wall) for name, s in self.seconds.items()}
        ours = sum(v for k, v in pct.items() if k != "machine")
        pct["other"] = max(0, pct.get("machine", 0) - ours)
        return pct


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    kind: str
    pid: int
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def server(kind: str, url: str) -> Iterator[Server]:
    """Run serve.py (`trofast` or `naive`) in a subprocess until it answers /healthz."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / "serve.py"), kind, url, str(port)],
        stdin=subprocess.DEVNULL,
    )
    running = Server(kind, process.pid, port)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the {kind} server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{running.base_url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
