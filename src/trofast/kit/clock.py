"""Injected time (DESIGN rule 8): code asks a Clock, never the system directly."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from trofast.kit.errors import invalid

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class Clock(Protocol):
    """Source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to; for tests, the demo and replays."""

    def __init__(self, at: datetime) -> None:
        self._at = as_utc(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = as_utc(at)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._at += delta


def as_utc(value: datetime) -> datetime:
    """Return `value` in UTC; naive values are taken to be UTC already (as SQLite returns them)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def month_bounds(zone: ZoneInfo, month: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month `month` ("2026-01") in `zone`; a value in
    another shape is refused with 422 `invalid_month`."""
    found = MONTH.match(month)
    if found is None:
        raise invalid("invalid_month", f"{month!r} is not a month such as 2026-01.")
    year, number = int(found.group(1)), int(found.group(2))
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)
