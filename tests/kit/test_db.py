"""kit.db: the SQLite write turns are handed out first come, first served; writes queued
together share one commit, and one that fails loses no other."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.exc import TimeoutError as PoolTimeout

from trofast.kit.db import Database, FairLock
from trofast.kit.errors import Problem
from trofast.kit.idempotency import idempotency_keys, remember


def test_write_turns_go_in_arrival_order() -> None:
    lock = FairLock(timeout=5)
    lock.acquire()
    order: list[int] = []

    def wait_for_turn(n: int) -> None:
        lock.acquire()
        order.append(n)
        lock.release()

    threads = []
    for n in range(5):
        thread = threading.Thread(target=wait_for_turn, args=(n,))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # let each one queue before the next
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]
    lock.acquire()  # free again
    lock.release()


def test_a_turn_not_given_in_time_is_a_pool_timeout() -> None:
    lock = FairLock(timeout=0.05)
    lock.acquire()
    with pytest.raises(PoolTimeout):
        lock.acquire()
    lock.release()
    lock.acquire()  # the timed-out waiter left the queue: the lock is free
    lock.release()


def _queue_behind_a_busy_writer(
    db: Database, works: list[Callable[[Connection], Any]]
) -> list[Any]:
    """Run `works` through `run_write` while the writer is busy, so that they are all queued
    when it is free again; each one's outcome (result or exception)."""
    busy, free = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> None:
        busy.set()
        free.wait(10)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(db.run_write(blocker))
        while not busy.is_set():
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(db.run_write(work)) for work in works]
        await asyncio.sleep(0.05)  # queued: let a writer thread become free to take them
        free.set()
        await first
        return list(await asyncio.gather(*queued, return_exceptions=True))

    db = dataclasses.replace(db, write_threads=ThreadPoolExecutor(1), write_queue=deque())
    return asyncio.run(main())


def _stored_keys(db: Database, program_id: int) -> set[str]:
    with db.read() as conn:
        rows = conn.execute(
            select(idempotency_keys.c.key).where(idempotency_keys.c.program_id == program_id)
        ).all()
    return {row.key for row in rows}


def test_queued_writes_share_one_commit(db: Database, make_program: Callable[..., Any]) -> None:
    program_id = make_program().program_id
    now = datetime.now(UTC)

    def work(n: int) -> Callable[[Connection], Any]:
        def remember_one(conn: Connection) -> Any:
            remember(conn, program_id, f"k{n}", "d", 201, {"n": n}, now)
            return conn.get_transaction()

        return remember_one

    outcomes = _queue_behind_a_busy_writer(db, [work(n) for n in range(5)])
    assert len({id(transaction) for transaction in outcomes}) == 1  # one transaction for all
    assert _stored_keys(db, program_id) == {f"k{n}" for n in range(5)}


def test_a_failing_write_in_a_group_loses_no_other(
    db: Database, make_program: Callable[..., Any]
) -> None:
    program_id = make_program().program_id
    now = datetime.now(UTC)

    def work(n: int) -> Callable[[Connection], Any]:
        def remember_one(conn: Connection) -> Any:
            remember(conn, program_id, f"k{n}", "d", 201, {"n": n}, now)
            if n == 2:
                raise Problem(422, "refused", "Number two is refused after writing.")
            return n

        return remember_one

    outcomes = _queue_behind_a_busy_writer(db, [work(n) for n in range(5)])
    assert outcomes[:2] == [0, 1] and outcomes[3:] == [3, 4]
    assert isinstance(outcomes[2], Problem) and outcomes[2].code == "refused"
    assert _stored_keys(db, program_id) == {"k0", "k1", "k3", "k4"}


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # SQLite has one writer
def test_a_group_waiting_on_a_lock_runs_again_one_by_one(
    db: Database, make_program: Callable[..., Any]
) -> None:
    """Two groups could lock rows in opposite orders: a group whose statement waits longer
    than GROUP_LOCK_TIMEOUT gives up, and its works run again, each waiting as long as it
    takes."""
    program_id = make_program().program_id
    now = datetime.now(UTC)
    holding = threading.Event()

    def hold_key_k2() -> None:  # another transaction inserts k2 and rolls back 0.6 s later
        with db.writer.connect() as other, other.begin() as tx:
            remember(other, program_id, "k2", "d", 201, {"n": -1}, now)
            holding.set()
            time.sleep(0.6)
            tx.rollback()

    holder = threading.Thread(target=hold_key_k2)
    holder.start()
    holding.wait(5)

    def work(n: int) -> Callable[[Connection], Any]:
        def remember_one(conn: Connection) -> Any:
            remember(conn, program_id, f"k{n}", "d", 201, {"n": n}, now)
            return conn.get_transaction()

        return remember_one

    outcomes = _queue_behind_a_busy_writer(db, [work(n) for n in range(5)])
    holder.join(5)
    # not one transaction: the group gave up and ran one by one
    assert len({id(transaction) for transaction in outcomes}) > 1
    assert _stored_keys(db, program_id) == {f"k{n}" for n in range(5)}
