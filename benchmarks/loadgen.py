"""Closed-loop HTTP load: N keep-alive clients POST purchases as fast as answers come back.

    python benchmarks/loadgen.py --port 8000 --token tf_... --members 1 10000 [--tool wrk]

Every request is a purchase with a unique `external_id` for a random member. Requests
started during the warm-up are not counted; the rest are, and their latency is the time
from sending the request to reading the whole answer. Prints one JSON object: counts,
percentiles, the CPU seconds the generator used and (python) every latency in µs.

Two generators, chosen with --tool:
- `python`: asyncio (uvloop) over raw sockets with hand-written HTTP/1.1, in this process.
  About 40 µs of CPU per request, so it takes a few percent of a core from the server.
- `wrk` (apt-get install wrk): C, with a small Lua script for the bodies; cheaper still,
  but it reports percentiles only, so runs cannot be pooled exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATH = "/v1/activities"
BODY = '{"type":"purchase","external_id":"%s","member_id":%d,"amount":%d,"currency":"%s"}'


@dataclass(frozen=True)
class Load:
    port: int
    token: str
    clients: int
    seconds: float
    warmup: float
    members: tuple[int, int]
    prefix: str
    currency: str = "SEK"
    host: str = "127.0.0.1"


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[int] = field(default_factory=Counter)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(latencies_ms: list[float], seconds: float, errors: dict[str, int]) -> dict[str, Any]:
    latencies_ms.sort()
    return {
        "requests": len(latencies_ms),
        "seconds": round(seconds, 3),
        "rps": round(len(latencies_ms) / seconds, 1),
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p90_ms": round(percentile(latencies_ms, 90), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "max_ms": round(latencies_ms[-1], 2) if latencies_ms else 0.0,
        "errors": errors,
    }


# --------------------------------------------------------------------------------------------
# asyncio generator
# --------------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    else:
        raise RuntimeError("the load generator needs answers with a Content-Length")
    await reader.readexactly(length)
    return status


async def _client(load: Load, number: int, start_ns: int, end_ns: int, tally: _Tally) -> None:
    rng = random.Random(number)
    low, high = load.members
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {load.host}:{load.port}\r\n"
        f"Authorization: Bearer {load.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    reader, writer = await asyncio.open_connection(load.host, load.port)
    sent = 0
    try:
        while True:
            began = time.perf_counter_ns()
            if began >= end_ns:
                break
            sent += 1
            body = BODY % (
                f"{load.prefix}-{number}-{sent}",
                rng.randint(low, high),
                rng.randint(1_000, 100_000),
                load.currency,
            )
            payload = body.encode()
            writer.write(head + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            status = await _read_response(reader)
            if began >= start_ns:
                tally.latencies_ns.append(time.perf_counter_ns() - began)
                if not 200 <= status < 300:
                    tally.errors[status] += 1
    finally:
        writer.close()


async def _run_python(load: Load) -> dict[str, Any]:
    tally = _Tally()
    start_ns = time.perf_counter_ns() + int(load.warmup * 1e9)
    end_ns = start_ns + int(load.seconds * 1e9)
    await asyncio.gather(*(_client(load, n, start_ns, end_ns, tally) for n in range(load.clients)))
    errors = {str(code): count for code, count in sorted(tally.errors.items())}
    result = summary([ns / 1e6 for ns in tally.latencies_ns], load.seconds, errors)
    result["latencies_us"] = [ns // 1000 for ns in tally.latencies_ns]
    return result


def run_python(load: Load) -> dict[str, Any]:
    try:
        import uvloop

        result = uvloop.run(_run_python(load))
    except ImportError:
        result = asyncio.run(_run_python(load))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"tool": "python", **result, "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local sent = 0
function init(args)
  math.randomseed(tid * 7919)
end
function request()
  sent = sent + 1
  local body = string.format('%(body)s', "%(prefix)s-" .. tid .. "-" .. sent,
    math.random(%(low)d, %(high)d), math.random(1000, 100000), "%(currency)s")
  return wrk.format("POST", "%(path)s", {
    ["Authorization"] = "Bearer %(token)s",
    ["Content-Type"] = "application/json",
  }, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,'
    .. '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _wrk(load: Load, prefix: str, seconds: float, script_dir: Path) -> dict[str, Any]:
    script = script_dir / f"{prefix}.lua"
    script.write_text(
        _WRK_SCRIPT
        % {
            "body": BODY,
            "prefix": prefix,
            "low": load.members[0],
            "high": load.members[1],
            "currency": load.currency,
            "path": PATH,
            "token": load.token,
        }
    )
    command = [
        "wrk", "-t1", f"-c{load.clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
        "-s", str(script), f"http://{load.host}:{load.port}{PATH}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[7:])
            return parsed
    raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")


def run_wrk(load: Load) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), use --tool python")
    with tempfile.TemporaryDirectory() as tmp:
        if load.warmup > 0:
            _wrk(load, f"{load.prefix}w", load.warmup, Path(tmp))
        raw = _wrk(load, load.prefix, load.seconds, Path(tmp))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = raw["duration_us"] / 1e6
    errors = {"non-2xx": raw["status_errors"], "socket": raw["socket_errors"]}
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": {k: v for k, v in errors.items() if v},
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--members", type=int, nargs=2, required=True, metavar=("LOW", "HIGH"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--prefix", default=f"load{int(time.time())}")
    parser.add_argument("--currency", default="SEK")
    parser.add_argument("--tool", choices=("python", "wrk"), default="python")
    args = parser.parse_args(argv)
    load = Load(
        port=args.port,
        token=args.token,
        clients=args.clients,
        seconds=args.seconds,
        warmup=args.warmup,
        members=(args.members[0], args.members[1]),
        prefix=args.prefix,
        currency=args.currency,
    )
    result = run_wrk(load) if args.tool == "wrk" else run_python(load)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
