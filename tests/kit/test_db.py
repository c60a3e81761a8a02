"""kit.db: the SQLite write turns are handed out first come, first served."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from trofast.kit.db import FairLock


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
