"""Earn throughput and latency: Trofast beside the naive raw-SQL baselines, in one run.

    .venv/bin/python benchmarks/earn.py [--db sqlite|postgresql|both] [--seconds 10]
                                        [--clients 16] [--loadgen python|wrk] [--only cd]

For each database (a throwaway PostgreSQL server from tests/pgserver.py, a temporary SQLite
file), with 10,000 members and 100,000 earns of history loaded first:

  a) Trofast single earn: `POST /v1/activities` (a purchase by member_id, pos API key) on
     the app `trofast serve --no-worker` runs, uvicorn in a subprocess;
  b) the naive baseline of PERFORMANCE.md: a plain-`def` FastAPI endpoint doing the same
     writes in raw SQL over a connection pool, served and loaded the same way;
  c) Trofast batch earn: `POST /v1/activities/batch`, 1,000 purchases a request, one client;
  d) the raw SQL batch: the same writes, 1,000 earns a transaction with executemany.

(a) and (b) are loaded by N keep-alive clients in a separate process (loadgen.py). The four
measurements take turns in rounds (a b c d, then b a d c, ...) so that a change in the
machine's load hits them alike; each gets --seconds in all. Prints a table per database
with the ratios Trofast/naive and batch/raw and where the CPU went, and writes every figure
to benchmarks/results/earn-<date>.json. Machines are noisy: compare ratios, and absolute
figures only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

import dataset
import rawsql
from dataset import BATCH, Loaded
from loadgen import percentile
from machine import (
    BENCHMARKS,
    CPUS,
    IDLE_PCT,
    CpuTally,
    Meters,
    Server,
    machine_busy,
    process_cpu,
    server,
    tree_cpu,
    wait_idle,
)
from serve import PROGRAM_KEY, loop_and_http

ROOT = BENCHMARKS.parent
_prefixes = itertools.count(1)


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    clients: int
    members: int
    history: int
    loadgen: str
    pg_fast: bool
    rounds: int = 2
    wait_idle: float = 0
    only: str = "abcd"


def _prefix(label: str) -> str:
    """A unique prefix for the external_ids of one run of requests."""
    return f"{label}{time.time_ns()}x{next(_prefixes)}"


def _meters(pid: int, loaded: Loaded, role: str = "server") -> Meters:
    meters: Meters = {role: lambda: process_cpu(pid)}
    if loaded.postmaster is not None:
        postmaster = loaded.postmaster
        meters["database"] = lambda: tree_cpu(postmaster)
    return meters


class Arm(Protocol):
    def run(self, seconds: float) -> None: ...
    def result(self) -> dict[str, Any]: ...


@dataclass
class SingleEarns:
    """(a) or (b): N keep-alive clients POST single purchases to one server."""

    srv: Server
    loaded: Loaded
    opts: Options
    cpu: CpuTally = field(default_factory=CpuTally)
    runs: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def run(self, seconds: float) -> None:
        low, high = self.loaded.members
        command = [
            sys.executable, str(BENCHMARKS / "loadgen.py"), "--tool", self.opts.loadgen,
            "--port", str(self.srv.port), "--token", self.loaded.token,
            "--members", str(low), str(high), "--clients", str(self.opts.clients),
            "--seconds", str(seconds), "--warmup", str(self.opts.warmup),
            "--prefix", _prefix(self.srv.kind),
        ]  # fmt: skip
        with self.cpu.measure(_meters(self.srv.pid, self.loaded)):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr}")
        out: dict[str, Any] = json.loads(done.stdout)
        self.cpu.add("load", out.pop("cpu_seconds"))
        self.latencies_ms.extend(us / 1000 for us in out.pop("latencies_us", []))
        self.errors.update(out["errors"])
        self.runs.append(out)

    def result(self) -> dict[str, Any]:
        requests = sum(r["requests"] for r in self.runs)
        seconds = sum(r["seconds"] for r in self.runs)
        if self.latencies_ms:  # every latency: percentiles of all runs together
            pooled = "exact"
            values = sorted(self.latencies_ms)
            quantiles = {p: percentile(values, p) for p in (50, 90, 99)}
            slowest = values[-1]
        else:  # wrk gives percentiles per run: weigh them by the run's requests
            pooled = "request-weighted mean of the runs' percentiles"
            quantiles = {
                p: sum(r[f"p{p}_ms"] * r["requests"] for r in self.runs) / max(requests, 1)
                for p in (50, 90, 99)
            }
            slowest = max(r["max_ms"] for r in self.runs)
        return {
            "tool": self.opts.loadgen,
            "requests": requests,
            "seconds": round(seconds, 2),
            "rps": round(requests / seconds, 1),
            **{f"p{p}_ms": round(v, 2) for p, v in quantiles.items()},
            "max_ms": round(slowest, 2),
            "errors": dict(self.errors),
            "percentiles": pooled,
            "runs": [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "seconds")} for r in self.runs],
            "cpu_pct": self.cpu.percent(),
        }


@dataclass
class Batches:
    """(c) or (d): batches of 1,000 earns back to back; `run_one` runs one, returns earns."""

    run_one: Callable[[], int]
    meters: Meters
    cpu: CpuTally = field(default_factory=CpuTally)
    durations: list[float] = field(default_factory=list)
    earns: int = 0
    seconds: float = 0.0

    def run(self, seconds: float) -> None:
        with self.cpu.measure(self.meters):
            started = time.perf_counter()
            while True:
                began = time.perf_counter()
                self.earns += self.run_one()
                self.durations.append(time.perf_counter() - began)
                if began + self.durations[-1] - started >= seconds:
                    break
        self.seconds += time.perf_counter() - started

    def result(self) -> dict[str, Any]:
        durations = sorted(self.durations)
        return {
            "batches": len(durations),
            "earns": self.earns,
            "seconds": round(self.seconds, 2),
            "earns_per_s": round(self.earns / self.seconds, 1),
            "batch_p50_ms": round(1000 * percentile(durations, 50), 1),
            "batch_max_ms": round(1000 * durations[-1], 1),
            "cpu_pct": self.cpu.percent(),
        }


def _http_batch(client: httpx.Client, loaded: Loaded, rng: random.Random) -> Callable[[], int]:
    """(c): one `POST /v1/activities/batch` of 1,000 new purchases."""
    low, high = loaded.members

    def run_one() -> int:
        prefix = _prefix("batch")
        purchases = [
            {"type": "purchase", "external_id": f"{prefix}-{i}",
             "member_id": rng.randint(low, high), "amount": rng.randint(1_000, 100_000),
             "currency": "SEK"}
            for i in range(BATCH)
        ]  # fmt: skip
        response = client.post(
            "/v1/activities/batch",
            content=json.dumps({"activities": purchases}),
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        accepted = int(response.json()["accepted"])
        if accepted != BATCH:
            raise RuntimeError(f"only {accepted} of a batch of {BATCH} were accepted")
        return accepted

    return run_one


def _raw_batch(
    conn: rawsql.DBAPIConnection, loaded: Loaded, rng: random.Random
) -> Callable[[], int]:
    """(d): the same writes for 1,000 earns in one transaction, no Trofast code."""
    target = rawsql.load_target(conn, loaded.dialect, PROGRAM_KEY)
    low, high = loaded.members

    def run_one() -> int:
        prefix = _prefix("raw")
        earns = [
            rawsql.EarnIn(f"{prefix}-{i}", rng.randint(low, high), rng.randint(1_000, 100_000))
            for i in range(BATCH)
        ]
        return rawsql.earn_batch(conn, loaded.dialect, target, earns, datetime.now(UTC))

    return run_one


def measure(name: str, url: str, settings: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Load the database, then run the four measurements in alternating rounds."""
    rng = random.Random(20_260_115)
    started = time.monotonic()
    print(f"\n[{name}] loading {opts.members:,} members and {opts.history:,} earns...", flush=True)
    loaded = dataset.load(url, opts.members, opts.history, rng)
    results: dict[str, Any] = {
        "settings": settings,
        "setup_seconds": round(time.monotonic() - started, 1),
    }
    with (
        server("trofast", url) as ours,
        server("naive", url) as naive,
        httpx.Client(
            base_url=ours.base_url, headers={"Authorization": f"Bearer {loaded.token}"}, timeout=600
        ) as client,
        contextlib.closing(rawsql.open_connection(url)) as raw,
    ):
        this_process = _meters(os.getpid(), loaded, role="client")
        batch_meters = {**_meters(ours.pid, loaded), "load": this_process["client"]}
        http_batch = Batches(_http_batch(client, loaded, rng), batch_meters)
        raw_batch = Batches(_raw_batch(raw, loaded, rng), this_process)
        every: dict[str, Arm] = {
            "trofast_single": SingleEarns(ours, loaded, opts),
            "naive_single": SingleEarns(naive, loaded, opts),
            "trofast_batch": http_batch,
            "raw_batch": raw_batch,
        }
        arms = {
            key: arm
            for letter, (key, arm) in zip("abcd", every.items(), strict=True)
            if letter in opts.only
        }
        for arm in arms.values():  # warm-up batches (a and b warm up at the start of every run)
            if isinstance(arm, Batches):
                arm.run_one()
        results["machine_busy_before_pct"] = busy = machine_busy()
        if busy > IDLE_PCT:
            print(f"[{name}] WARNING: the machine is {busy}% busy before the run (other"
                  " processes): figures will be low and noisy.", flush=True)  # fmt: skip
        keys = list(arms)
        singles = [k for k in keys if k not in BATCH_ARMS]
        turned = singles[::-1] + [k for k in keys if k in BATCH_ARMS][::-1]  # b a d c
        for number in range(opts.rounds):
            order = keys if number % 2 == 0 else turned
            for key in order:
                if opts.wait_idle > 0:
                    wait_idle(opts.wait_idle, name)
                print(f"[{name}] round {number + 1}/{opts.rounds}: {key}", flush=True)
                arms[key].run(opts.seconds / opts.rounds)
        results.update({key: arm.result() for key, arm in arms.items()})
    results["ratios"] = ratios(results)
    return results


BATCH_ARMS = ("trofast_batch", "raw_batch")


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The ratios of the measurements that ran (`--only`)."""
    out: dict[str, float] = {}
    if "trofast_single" in results and "naive_single" in results:
        ours, naive = results["trofast_single"], results["naive_single"]
        out["single_throughput_trofast_over_naive"] = round(ours["rps"] / naive["rps"], 2)
        out["single_p50_trofast_over_naive"] = round(ours["p50_ms"] / naive["p50_ms"], 2)
        out["single_p99_trofast_over_naive"] = round(ours["p99_ms"] / naive["p99_ms"], 2)
    if "trofast_batch" in results and "raw_batch" in results:
        out["batch_trofast_over_raw"] = round(
            results["trofast_batch"]["earns_per_s"] / results["raw_batch"]["earns_per_s"], 2
        )
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

_CPU_COLUMNS = (("app", ("server", "client")), ("db", ("database",)), ("load", ("load",)),
                ("other", ("other",)))  # fmt: skip


def _cpu_cells(row: dict[str, Any]) -> str:
    cpu = row["cpu_pct"]
    cells = []
    for _, keys in _CPU_COLUMNS:
        value = next((cpu[k] for k in keys if k in cpu), None)
        cells.append(f"{'-' if value is None else value:>6}")
    return "".join(cells)


def table(name: str, results: dict[str, Any], opts: Options) -> str:
    """The human-readable report of one database."""
    s = results["settings"]
    detail = ", ".join(f"{k}={v}" for k, v in s.items() if k != "server_version")
    r = results["ratios"]
    cpu_head = "".join(f"{label:>6}" for label, _ in _CPU_COLUMNS)
    lines = [
        f"{name} {s['server_version']} ({detail})",
        f"  {opts.members:,} members, {opts.history:,} earns of history; {opts.seconds:g} s per"
        f" measurement in {opts.rounds} rounds; machine {results['machine_busy_before_pct']}%"
        " busy before",
        f"  a, b: {opts.clients} keep-alive clients, load generator {opts.loadgen};"
        f" c: one client, {BATCH:,} purchases a request",
        "  CPU, % of one core: app = uvicorn process (d: the client), db = PostgreSQL server"
        " (SQLite works inside app),",
        "  load = load generator (c: the client), other = processes not ours",
    ]
    if "trofast_single" in results or "naive_single" in results:
        head = f"{'earns/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>7}"
        lines.append(f"  {'':43}{head} {cpu_head}")
    for label, key in (
        ("a) Trofast  POST /v1/activities", "trofast_single"),
        ("b) naive    plain-def endpoint, raw SQL", "naive_single"),
    ):
        if key not in results:
            continue
        row = results[key]
        errors = sum(row["errors"].values())
        lines.append(
            f"  {label:43}{row['rps']:>9,.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{row['max_ms']:>9.1f}{errors:>7} {_cpu_cells(row)}"
        )
    if "single_throughput_trofast_over_naive" in r:
        lines.append(
            f"  {'   Trofast / naive':43}{r['single_throughput_trofast_over_naive']:>8.2f}x"
            f"{r['single_p50_trofast_over_naive']:>8.2f}x"
            f"{r['single_p99_trofast_over_naive']:>8.2f}x"
        )
    lines.append(f"  {'':43}{'earns/s':>9}{'ms/batch':>9}{'':>25} {cpu_head}")
    for label, key in (
        ("c) Trofast  POST /v1/activities/batch", "trofast_batch"),
        (f"d) raw SQL  executemany, {BATCH:,} earns/txn", "raw_batch"),
    ):
        if key not in results:
            continue
        row = results[key]
        lines.append(
            f"  {label:43}{row['earns_per_s']:>9,.0f}{row['batch_p50_ms']:>9,.0f}{'':>25}"
            f" {_cpu_cells(row)}"
        )
    if "batch_trofast_over_raw" in r:
        lines.append(f"  {'   Trofast batch / raw':43}{r['batch_trofast_over_raw']:>8.2f}x")
    return "\n".join(lines)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def environment(opts: Options) -> dict[str, Any]:
    loop, http = loop_and_http()
    return {
        "date": date.today().isoformat(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "cpus": CPUS,
        "uvicorn": f"1 worker, loop={loop}, http={http}, no access log",
        "load_generator": opts.loadgen,
        "clients": opts.clients,
        "seconds": opts.seconds,
        "rounds": opts.rounds,
        "warmup_seconds": opts.warmup,
        "members": opts.members,
        "history": opts.history,
        "batch": BATCH,
        "only": opts.only,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="Earn throughput and latency: Trofast against raw SQL, in one run."
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=10, help="per measurement, in all")
    parser.add_argument("--rounds", type=int, default=2, help="turns the seconds are split in")
    parser.add_argument("--warmup", type=float, default=1, help="unmeasured seconds per a/b run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100_000, help="earns loaded first")
    parser.add_argument(
        "--loadgen", choices=("python", "wrk"), default="python",
        help="python: loadgen.py's asyncio generator (exact pooled percentiles); wrk: needs"
        " apt-get install wrk",
    )  # fmt: skip
    parser.add_argument(
        "--pg-fast", action="store_true",
        help="keep the test server's fsync=off settings instead of production durability",
    )  # fmt: skip
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="SECONDS",
        help="before each measurement wait up to SECONDS for the machine to be idle",
    )  # fmt: skip
    parser.add_argument(
        "--only", default="abcd", metavar="LETTERS",
        help="the measurements to run, e.g. cd for the batch ones only (default abcd)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="JSON file (default results/earn-DATE.json)")
    args = parser.parse_args(argv)
    only = "".join(sorted(set(args.only)))
    if not only or set(only) - set("abcd"):
        parser.error("--only takes letters among a, b, c and d")
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    opts = Options(
        seconds=args.seconds, warmup=args.warmup, clients=args.clients, members=args.members,
        history=args.history, loadgen=args.loadgen, pg_fast=args.pg_fast, rounds=args.rounds,
        wait_idle=args.wait_idle, only=only,
    )  # fmt: skip
    started = time.monotonic()
    report: dict[str, Any] = {"environment": environment(opts), "results": {}}
    tables: list[str] = []
    databases: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Any]]]] = []
    if args.db in ("postgresql", "both"):
        databases.append(("PostgreSQL", lambda: dataset.postgres(opts.pg_fast)))
    if args.db in ("sqlite", "both"):
        databases.append(("SQLite", dataset.sqlite_file))
    for name, open_database in databases:
        with open_database() as (url, settings):
            results = measure(name, url, settings, opts)
        report["results"][name.lower()] = results
        tables.append(table(name, results, opts))
        print("\n" + tables[-1], flush=True)
    report["environment"]["total_seconds"] = round(time.monotonic() - started, 1)
    output = args.output or BENCHMARKS / "results" / f"earn-{date.today().isoformat()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + "\n\n".join(tables))
    print(f"\nTotal {report['environment']['total_seconds']:.0f} s; results in {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
