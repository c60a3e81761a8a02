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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    # Only purchases that a return in the window takes back need their points remembered.
    replay = _Replay(spec, repository.returned_purchases(conn, program_id, start, end))
    for member_id, r in repository.member_rows(conn, program_id).items():
        replay.add_member(
            engine.MemberSnapshot(
                id=member_id,
                status=str(r.status),
                birth_date=r.birth_date,
                enrolled_at=r.enrolled_at,
                channel=r.channel,
                tags=tuple(r.tags or ()),
            )
        )
    # Bodies are read only where the program can use them: a purchase's lines, an event's
    # attributes. Returns are priced from the purchase they return.
    program = replay.program
    reads_lines = program.reads_lines
    triggers = program.by_trigger
    bodies = (("purchase",) if reads_lines else ()) + (
        ("event",) if any(trigger != "purchase" for trigger in triggers) else ()
    )
    earned, returned, parse = replay.earned, replay.returned, datetime.fromisoformat
    months: dict[str, Month] = {}
    count = 0
    month = Month("")
    month_ends = start  # rows come oldest first: find the month only when one ends
    for rows in repository.activity_chunks(conn, program_id, start, end, bodies=bodies):
        # Plain tuples, unpacked once (see repository.ACTIVITY_COLUMNS).
        for (activity_id, kind, member_id, occurred_at, amount, currency, store, channel,
             event_type, original_id, body, points) in rows:  # fmt: skip
            if type(occurred_at) is str:  # SQLite
                occurred_at = parse(occurred_at)
            if occurred_at >= month_ends:
                local = occurred_at.astimezone(zone)
                key = local.strftime("%Y-%m")
                month = months.get(key) or months.setdefault(key, Month(key))
                month_ends = _next_month(local).astimezone(UTC)  # UTC compares with UTC at once
            month.activities += 1
            month.actual_points += points
            if member_id is None:
                continue
            if kind == "purchase":
                facts = engine.ActivityFacts(
                    "purchase",
                    occurred_at,
                    amount or 0,
                    currency,
                    store,
                    channel,
                    _lines(body) if reads_lines else (),
                )
                month.simulated_points += earned(member_id, facts, activity_id)
            elif kind == "return":
                month.simulated_points += returned(original_id, amount or 0)
            elif (event_type or "event") in triggers:  # else no rule: nothing to earn
                facts = engine.ActivityFacts(
                    "event",
                    occurred_at,
                    event_type=event_type,
                    attributes=_decoded(body).get("attributes", engine.NO_ATTRIBUTES),
                )
                month.simulated_points += earned(member_id, facts)
        count += len(rows)
        if progress is not None:
            progress(len(rows))
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


class _Replay:
    """What a replay remembers: each member with their rule counters (as the live system keeps
    them in the database), the program-wide counters, and the simulated points of purchases."""

    def __init__(self, spec: ProgramSpec, returned: set[int]) -> None:
        self.program = engine.compile_program(spec)
        self.returned_ids = returned
        self.program_counts: dict[str, int] = {}
        #: member id -> (snapshot, counters)
        self.members: dict[int, tuple[engine.MemberSnapshot, dict[str, tuple[int, int]]]] = {}
        self.purchases: dict[int, tuple[int, int]] = {}  # id -> (amount, simulated points)

    def add_member(self, snapshot: engine.MemberSnapshot) -> None:
        self.members[snapshot.id] = (snapshot, {})

    def earned(
        self, member_id: int, facts: engine.ActivityFacts, purchase_id: int | None = None
    ) -> int:
        """The points `facts` earn under the proposed program; a purchase's are remembered
        for its returns. Only the points: engine.points_only() gives what engine.evaluate()
        would, and updates the counters as apply_counters() would."""
        member = self.members.get(member_id)
        if member is None:
            return 0
        snapshot, counts = member
        points = engine.points_only(self.program, facts, snapshot, counts, self.program_counts)
        if purchase_id in self.returned_ids:
            self.purchases[purchase_id] = (facts.amount, points)
        return points

    def returned(self, purchase_id: int | None, amount: int) -> int:
        """A return takes back the share of the purchase's points that it is of its amount."""
        if purchase_id is None:
            return 0
        bought, points = self.purchases.get(purchase_id, (0, 0))
        return -(points * amount // bought) if bought else 0


def _lines(body: str | dict[str, Any] | None) -> tuple[engine.Line, ...]:
    line = engine.Line
    return tuple(
        [
            line(
                ln["sku"],
                int(ln.get("quantity", 1)),
                int(ln["amount"]),
                ln.get("category"),
                tuple(ln.get("labels", ())),
            )
            for ln in _decoded(body).get("lines", ())
        ]
    )


def _decoded(body: str | dict[str, Any] | None) -> dict[str, Any]:
    if body is None:
        return {}
    decoded: dict[str, Any] = json.loads(body) if isinstance(body, str) else body
    return decoded
