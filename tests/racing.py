"""Racing real threads against the API (DESIGN rule 5): one client per thread, released
together by a barrier, over one app or over one app and engine each (like separate server
processes, so on SQLite the writers really contend for the file lock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
from fastapi.testclient import TestClient

from trofast.app import create_app
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database, connect

#: The two ways to race, for `pytest.fixture(params=MODES)`.
MODES = ["one_app", "app_per_thread"]


@contextmanager
def racing_clients(
    mode: str, db: Database, clock: FixedClock, client: TestClient, threads: int
) -> Iterator[list[TestClient]]:
    """`threads` clients: `client` shared (one_app), or each over its own engine."""
    if mode == "one_app":
        yield [client] * threads
        return
    engines = [connect(db.url, pool_size=2) for _ in range(threads)]
    try:
        yield [TestClient(create_app(engine, clock)) for engine in engines]
    finally:
        for engine in engines:
            engine.dispose()


def race(
    clients: list[TestClient], send: Callable[[TestClient, int], httpx.Response]
) -> list[httpx.Response]:
    """Run `send` in one thread per client, all released at once by a barrier; check that
    the requests really overlapped in time."""
    barrier = threading.Barrier(len(clients))
    spans: list[tuple[float, float]] = []

    def run(index: int) -> httpx.Response:
        barrier.wait()
        started = time.perf_counter()
        response = send(clients[index], index)
        spans.append((started, time.perf_counter()))
        return response

    with ThreadPoolExecutor(len(clients)) as pool:
        responses = list(pool.map(run, range(len(clients))))
    assert max(start for start, _ in spans) < min(end for _, end in spans), "no overlap"
    return responses
