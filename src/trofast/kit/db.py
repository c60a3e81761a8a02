"""Engines and transactions for SQLite (embedded, WAL) and PostgreSQL.

The caller owns the transaction (DESIGN rule 7): HTTP requests, jobs and CLI commands
open one with `write()` or `read()`; services receive the `Connection` and never commit.

On SQLite every write transaction starts with `BEGIN IMMEDIATE`, and writes go through a
pool of exactly one connection, so writers queue in-process instead of sleeping on
SQLite's busy timeout. Reads use a separate pool and plain deferred transactions.

Async endpoints hand their write transaction to `run_write()`, which queues it for a fixed
set of writer threads (on SQLite exactly one, the single writer; on PostgreSQL four). A
writer thread takes every work queued so far and runs them in one transaction with one
commit (group commit). Requests wait in that queue rather than as threads parked on the
pool, whose wake-ups cost more CPU than the earn itself when many wait for one connection.
On SQLite every `write()` also takes a first-come-first-served turn (`FairLock`) before
it asks the pool: the writer thread would otherwise take the connection back before a
thread it woke (a job, a plain `def` endpoint) could, and starve it under load.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout

T = TypeVar("T")


class FairLock:
    """A lock handed to its waiters in the order they came (threading.Lock is not fair)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=self._timeout):
            return  # handed over by release()
        with self._mutex:
            if turn in self._waiting:  # still queued: give up, as the pool would
                self._waiting.remove(turn)
                raise PoolTimeout(f"no write turn within {self._timeout:g} s")
        # release() handed it over just as the wait timed out: it is ours

    def release(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()  # stays held, by the next in line
            else:
                self._held = False


#: At most this many queued works share one transaction.
MAX_GROUP = 32
#: PostgreSQL: writer threads taking groups; while one runs Python the others wait on the
#: database (an earn's two round trips: 4 gave more earns/s than 2, docs/benchmarks.md).
PG_WRITERS = 4
#: PostgreSQL: how long a statement of a group may wait for a row lock. Two groups can lock
#: the same members in opposite orders; rather than wait for the deadlock detector (1 s),
#: the group gives up, is rolled back, and its works run again one by one.
GROUP_LOCK_TIMEOUT = "200ms"

_QueuedWork = tuple[Callable[[Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Give a queued work's outcome to its request (on the event loop's thread)."""
    if future.cancelled():  # the client went away; the work is done all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


@dataclass(frozen=True)
class Database:
    """The write engine, the read engine and which dialect they speak."""

    url: str
    writer: Engine
    reader: Engine
    #: The threads `run_write` runs transactions on (created on first use).
    write_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "trofast-writer"), compare=False, repr=False
    )
    #: SQLite: turns at the single write connection, first come first served.
    write_turns: FairLock | None = field(default=None, compare=False, repr=False)
    #: Works `run_write` queued for the writer threads, in arrival order.
    write_queue: deque[_QueuedWork] = field(default_factory=deque, compare=False, repr=False)
    #: How many queued works may share a transaction.
    max_group: int = 1

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on any exception."""
        turns = self.write_turns
        if turns is None:
            with self.writer.begin() as conn:
                yield conn
            return
        turns.acquire()
        try:
            with self.writer.begin() as conn:
                yield conn
        finally:
            turns.release()

    async def run_write(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` in a write transaction on a writer thread, awaited from the event loop.

        Works queued together share one transaction and one commit (group commit,
        `max_group`): each answer is given only after that commit. If any of them raises
        (on PostgreSQL also: a row lock not granted within `GROUP_LOCK_TIMEOUT`), the group
        is rolled back and each work runs again in a transaction of its own, so a failing
        request never changes or loses another's."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.write_queue.append((work, future, loop))  # deque.append is thread-safe
        self.write_threads.submit(self._write_group)
        return await future

    def _write_group(self) -> None:
        """Take the works queued so far (one submitted task per work: a task that finds the
        queue emptied by an earlier one has nothing to do) and run them."""
        group: list[_QueuedWork] = []
        while len(group) < self.max_group:
            try:
                group.append(self.write_queue.popleft())
            except IndexError:
                break
        if len(group) > 1:
            try:
                with self.write() as conn:
                    if not self.is_sqlite:
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{GROUP_LOCK_TIMEOUT}'")
                    results = [work(conn) for work, _, _ in group]
            except Exception:  # rolled back: every work again, on its own
                pass
            else:
                for (_, future, loop), result in zip(group, results, strict=True):
                    loop.call_soon_threadsafe(_settle, future, result, None)
                return
        for work, future, loop in group:
            try:
                with self.write() as conn:
                    result = work(conn)
            except BaseException as exc:  # handed to the awaiting request
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (rolled back at the end)."""
        with self.reader.connect() as conn, conn.begin() as tx:
            yield conn
            tx.rollback()

    def dispose(self) -> None:
        self.write_threads.shutdown(wait=True)
        self.writer.dispose()
        self.reader.dispose()


_POOL_TIMEOUT = 60.0


def connect(url: str, *, pool_size: int = 8) -> Database:
    """Open `url` (sqlite:///file.db or postgresql+psycopg://...)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        writer = _sqlite_engine(url, immediate=True, pool_size=1)
        reader = _sqlite_engine(url, immediate=False, pool_size=pool_size)
        return Database(
            url, writer, reader, write_turns=FairLock(_POOL_TIMEOUT), max_group=MAX_GROUP
        )
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False, future=True
    )

    @event.listens_for(engine, "connect")
    def _in_utc(dbapi_conn: Any, _record: Any) -> None:
        # Timestamps come in the session's time zone. In UTC psycopg gives them
        # `datetime.UTC`, which compares with other UTC instants eight times faster than
        # the `ZoneInfo('Etc/UTC')` it gives for a server's default zone (a replay compares
        # every activity's instant with the bounds of its day and month). Nothing reads a
        # local date in SQL: the programs' zones are applied in Python.
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        dbapi_conn.execute("SET TIME ZONE 'UTC'")
        dbapi_conn.autocommit = autocommit

    threads = ThreadPoolExecutor(min(PG_WRITERS, pool_size), "trofast-writer")
    return Database(url, engine, engine, threads, max_group=MAX_GROUP)


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=_POOL_TIMEOUT,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight on the driver: every transaction starts here, and `exec_driver_sql`
        # costs ten times more Python than the statement.
        conn.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    return engine
