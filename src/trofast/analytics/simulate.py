"""What-if: replay stored activities under a proposed program version, writing nothing.

The engine is pure, so the replay is a loop over the history: each member's rule counters
(caps, stamp cards, budgets) are kept in memory exactly as the live system keeps them in
the database. Returns take back the same share of the purchase's simulated points as they
took of its amount. Spending and expiry are taken as they really happened, so liability
differs from the real one by the difference in points issued.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from trofast.analytics import repository
from trofast.programs.spec import ProgramSpec
from trofast.rules import engine


@dataclass
class Month:
    """One calendar month (program time zone) of the replay."""

    month: str
    activities: int = 0
    actual_points: int = 0
    simulated_points: int = 0
    debits: int = 0
    actual_liability: int = 0
    simulated_liability: int = 0

    @property
    def difference(self) -> int:
        return self.simulated_points - self.actual_points


@dataclass
class Simulation:
    program_key: str
    currency: str
    point_value: int
    months: list[Month] = field(default_factory=list)
    activities: int = 0
    seconds: float = 0.0

    def money(self, points: int) -> int:
        """Liability of `points` in minor units (point_value is in 1/100 minor units)."""
        return points * self.point_value // 100

    @property
    def per_second(self) -> float:
        return self.activities / self.seconds if self.seconds else 0.0


def simulate(
    conn: Connection,
    program_id: int,
    spec: ProgramSpec,
    start: datetime,
    end: datetime,
    progress: Callable[[int], None] | None = None,
) -> Simulation:
    """Replay [start, end) under `spec`; per month: points really issued and simulated."""
    began = time.perf_counter()
    zone = spec.zone
    engine.compile_program(spec)
    snapshots = {
        member_id: engine.MemberSnapshot(
            id=member_id,
            status=str(r.status),
            birth_date=r.birth_date,
            enrolled_at=r.enrolled_at,
            channel=r.channel,
        )
        for member_id, r in repository.member_rows(conn, program_id).items()
    }
    member_counts: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    program_counts: dict[str, int] = {}
    purchases: dict[int, tuple[int, int]] = {}  # activity id -> (amount, simulated points)
    months: dict[str, Month] = {}
    count = 0
    month = Month("")
    month_ends = start  # rows come oldest first: find the month only when one ends
    for row in repository.activity_stream(conn, program_id, start, end):
        if row.occurred_at >= month_ends:
            local = row.occurred_at.astimezone(zone)
            key = local.strftime("%Y-%m")
            month = months.get(key) or months.setdefault(key, Month(key))
            month_ends = _next_month(local)
        month.activities += 1
        month.actual_points += int(row.points)
        month.simulated_points += _replay_one(
            spec, row, snapshots, member_counts, program_counts, purchases
        )
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(10_000)
    for debit in repository.member_debits(conn, program_id, start, end):
        key = debit.effective_at.astimezone(zone).strftime("%Y-%m")
        months.setdefault(key, Month(key)).debits += int(debit.amount)
    result = Simulation(spec.key, spec.currency, spec.point_value, activities=count)
    actual = simulated = 0
    for key in sorted(months):
        month = months[key]
        actual += month.actual_points - month.debits
        simulated += month.simulated_points - month.debits
        month.actual_liability, month.simulated_liability = actual, simulated
        result.months.append(month)
    result.seconds = time.perf_counter() - began
    return result


def _next_month(local: datetime) -> datetime:
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first.month == 12:
        return first.replace(year=first.year + 1, month=1)
    return first.replace(month=first.month + 1)


def _replay_one(
    spec: ProgramSpec,
    row: Any,
    snapshots: dict[int, engine.MemberSnapshot],
    member_counts: dict[int, dict[str, tuple[int, int]]],
    program_counts: dict[str, int],
    purchases: dict[int, tuple[int, int]],
) -> int:
    if row.member_id is None:
        return 0
    if row.type == "return":
        amount, points = purchases.get(row.original_id, (0, 0))
        return -(points * int(row.amount or 0) // amount) if amount else 0
    member = snapshots.get(int(row.member_id))
    if member is None:
        return 0
    facts = _facts(row)
    counts = member_counts[member.id]
    evaluation = engine.evaluate(
        spec, facts, member, engine.Counters(counts, program_counts), dates=False
    )
    engine.apply_counters(counts, program_counts, evaluation.counters)
    points = evaluation.total_points
    if row.type == "purchase":
        purchases[int(row.id)] = (int(row.amount or 0), points)
    return points


def _facts(row: Any) -> engine.ActivityFacts:
    body = row.body if isinstance(row.body, dict) else json.loads(row.body)
    if row.type == "purchase":
        return engine.ActivityFacts(
            type="purchase",
            occurred_at=row.occurred_at,
            amount=int(row.amount or 0),
            store=row.store,
            channel=row.channel,
            lines=tuple(
                engine.Line(
                    ln["sku"],
                    int(ln.get("quantity", 1)),
                    int(ln["amount"]),
                    ln.get("category"),
                    tuple(ln.get("labels", ())),
                )
                for ln in body.get("lines", ())
            ),
        )
    return engine.ActivityFacts(
        type="event",
        occurred_at=row.occurred_at,
        event_type=row.event_type,
        attributes=body.get("attributes", {}),
    )
