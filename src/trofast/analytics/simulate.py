"""What-if: replay stored activities under a proposed program version, writing nothing.

The engine is pure, so the replay is a loop over the history: each member's rule counters
(caps, stamp cards, budgets) are kept in memory exactly as the live system keeps them in
the database. Returns take back the same share of the purchase's simulated points as they
took of its amount. Spending and expiry are taken as they really happened, so liability
differs from the real one by the difference in points issued.

Each month also counts the vouchers granted, by reward id: those the proposed version's
rules would grant (`reward` effects and stamp cards whose reward is a voucher; the reward's
stock and limits aside) against those really granted to that month's activities (used,
cancelled by a return, or not); `rules.replay.points` counts them as it goes.

With two tiers or more in the proposed version, each month also counts the members by tier
under the proposed tiers (replayed with the points, see `analytics.tiers`) against the real
ones (from the tier history); the rules see the replayed tier as `tier.name`. Without tiers
none of that work is done.

Members do not share counters, except a rule's budget: without budgets, the members can be
shared between processes (`workers`, `trofast simulate --workers`), each replaying its
members' activities, and their months added up, with the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from queue import Empty
from typing import Any

import msgspec
from sqlalchemy import Connection

from trofast.analytics import repository
from trofast.analytics import tiers as tier_replay
from trofast.kit.db import connect
from trofast.programs import service as programs
from trofast.programs.spec import ProgramSpec
from trofast.rules import engine, replay


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
    #: Members by tier id at the month's end (the last day of the range for a last partial
    #: month), highest tier first; empty when the proposed version has fewer than two tiers.
    simulated_tiers: dict[str, int] = field(default_factory=dict)
    #: The same from what really happened (the tier history); None when the program never
    #: had tiers.
    actual_tiers: dict[str, int] | None = None
    #: Vouchers granted by the rules, per reward id: under the proposed version, and really.
    simulated_vouchers: dict[str, int] = field(default_factory=dict)
    actual_vouchers: dict[str, int] = field(default_factory=dict)

    @property
    def difference(self) -> int:
        return self.simulated_points - self.actual_points

    @property
    def tier_difference(self) -> dict[str, int]:
        """Simulated minus actual members, per tier of the proposed version."""
        actual = self.actual_tiers or {}
        return {tier: n - actual.get(tier, 0) for tier, n in self.simulated_tiers.items()}


@dataclass
class Simulation:
    program_key: str
    currency: str
    point_value: int
    months: list[Month] = field(default_factory=list)
    activities: int = 0
    seconds: float = 0.0
    #: The proposed version's tier ids, lowest first (empty: no tiers, no tier columns).
    tiers: list[str] = field(default_factory=list)
    #: Activities before `start` replayed only to know the tiers at the start (tier programs).
    history_activities: int = 0

    def money(self, points: int) -> int:
        """Liability of `points` in minor units (point_value is in 1/100 minor units)."""
        return points * self.point_value // 100

    @property
    def per_second(self) -> float:
        read = self.activities + self.history_activities
        return read / self.seconds if self.seconds else 0.0


def simulate(
    conn: Connection,
    program_id: int,
    spec: ProgramSpec,
    start: datetime,
    end: datetime,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> Simulation:
    """Replay [start, end) under `spec`; per month: points really issued and simulated.

    With `workers` > 1 the members are shared between that many processes (by id modulo
    `workers`, see repository.of_part), each replaying its members' activities, and their
    months are added up: the same result, sooner on a machine with the cores. A program with
    a rule budget replays in one process, as a budget is shared by all members.
    """
    began = time.perf_counter()
    zone = spec.zone
    tiered = len(spec.tiers) > 1
    # A tier program's replay starts earlier: the tiers at `start` depend on the windows
    # before it. Activities before `start` are replayed but not reported.
    first = tier_replay.warm_up_start(spec, start) if tiered else start
    boundaries = tier_replay.month_boundaries(spec.zone, start, end) if tiered else []
    url = conn.engine.url
    if workers > 1 and parallel(spec) and url.database not in (None, "", ":memory:"):
        # (an SQLite database in memory is this process's alone: it replays in one)
        address = url.render_as_string(hide_password=False)
        parts = _in_processes(address, program_id, spec, first, end, boundaries, workers, progress)
    else:
        parts = [_replay(conn, program_id, spec, first, end, boundaries, progress, None)]
    months: dict[str, Month] = {}
    count = 0
    snapshots: list[dict[str, int]] = [{} for _ in boundaries]
    for part in parts:
        count += part.activities
        for key, month in part.months.items():
            _add_month(months.setdefault(key, Month(key)), month)
        for total, counted in zip(snapshots, part.snapshots, strict=True):
            for tier, n in counted.items():
                total[tier] = total.get(tier, 0) + n
    for occurred_at, reward in repository.granted_vouchers(conn, program_id, first, end):
        key = occurred_at.astimezone(zone).strftime("%Y-%m")
        granted = months.setdefault(key, Month(key)).actual_vouchers
        granted[reward] = granted.get(reward, 0) + 1
    for debit in repository.member_debits(conn, program_id, start, end):
        key = debit.effective_at.astimezone(zone).strftime("%Y-%m")
        months.setdefault(key, Month(key)).debits += int(debit.amount)
    result = Simulation(spec.key, spec.currency, spec.point_value, activities=count)
    if tiered:
        rows = repository.member_rows(conn, program_id)
        _add_tiers(conn, program_id, spec, months, boundaries, snapshots, rows)
        result.tiers = [tier.id for tier in spec.tiers]
        first_key = start.astimezone(zone).strftime("%Y-%m")
        for key in [k for k in months if k < first_key]:  # the tier warm-up's
            result.history_activities += months.pop(key).activities
        result.activities -= result.history_activities
    actual = simulated = 0
    for key in sorted(months):
        month = months[key]
        actual += month.actual_points - month.debits
        simulated += month.simulated_points - month.debits
        month.actual_liability, month.simulated_liability = actual, simulated
        result.months.append(month)
    result.seconds = time.perf_counter() - began
    return result


def parallel(spec: ProgramSpec) -> bool:
    """Whether the replay of `spec` can be shared between processes: no rule has a budget
    (the one counter that members share)."""
    return not any(rule.limits.budget is not None for rule in spec.rules or ())


@dataclass
class _Part:
    """What the replay of one part of the members found: its activities per month (points
    really issued and simulated, vouchers the rules grant) and its members by tier at each
    month boundary (tier programs)."""

    months: dict[str, Month]
    snapshots: list[dict[str, int]]
    activities: int


def _add_month(total: Month, part: Month) -> None:
    total.activities += part.activities
    total.actual_points += part.actual_points
    total.simulated_points += part.simulated_points
    for reward, n in part.simulated_vouchers.items():
        total.simulated_vouchers[reward] = total.simulated_vouchers.get(reward, 0) + n


def _replay(
    conn: Connection,
    program_id: int,
    spec: ProgramSpec,
    first: datetime,
    end: datetime,
    boundaries: list[datetime],
    progress: Callable[[int], None] | None,
    part: repository.Part | None,
) -> _Part:
    """Replay the activities of [first, end) of the members of `part` (all without)."""
    zone = spec.zone
    tiered = bool(boundaries)
    # Only purchases that a return in the window takes back need their points remembered.
    replay = _Replay(spec, repository.returned_purchases(conn, program_id, first, end))
    entry = spec.tiers[0].id if tiered else None
    rows = repository.member_rows(conn, program_id, part)
    for member_id, r in rows.items():
        replay.add_member(
            engine.MemberSnapshot(
                id=member_id,
                # An erased member earned what it did while active (erased, it earns nothing
                # more): its activities are replayed as an active member's (docs/privacy.md).
                status="active" if r.status == "erased" else str(r.status),
                birth_date=r.birth_date,
                enrolled_at=r.enrolled_at,
                channel=r.channel,
                tags=tuple(r.tags or ()),
                tier=entry,
            )
        )
    tiers: tier_replay.TierReplay | None = None
    snapshots: list[dict[str, int]] = []
    if tiered:
        tiers = tier_replay.TierReplay(
            spec, {m: r.enrolled_at for m, r in rows.items()}, replay.set_tier
        )
    # Bodies are read only where the program can use them: a purchase's lines, an event's
    # attributes. Returns are priced from the purchase they return.
    program = replay.program
    reads_lines = program.reads_lines
    triggers = program.by_trigger
    bodies = (("purchase",) if reads_lines else ()) + (
        ("event",) if any(trigger != "purchase" for trigger in triggers) else ()
    )
    earned = replay.earned
    returned, parse = replay.returned, datetime.fromisoformat
    months: dict[str, Month] = {}
    count = 0
    month = Month("")
    month_ends = first  # rows come oldest first: find the month only when one ends
    for chunk in repository.activity_chunks(conn, program_id, first, end, bodies=bodies, part=part):
        # Plain tuples, unpacked once (see repository.ACTIVITY_COLUMNS).
        for (activity_id, kind, member_id, occurred_at, amount, currency, store, channel,
             event_type, original_id, body, points) in chunk:  # fmt: skip
            if type(occurred_at) is str:  # SQLite
                occurred_at = parse(occurred_at)
            if occurred_at >= month_ends:
                local = occurred_at.astimezone(zone)
                key = local.strftime("%Y-%m")
                month = months.get(key) or months.setdefault(key, Month(key))
                replay.vouchers = month.simulated_vouchers
                month_ends = _next_month(local).astimezone(UTC)  # UTC compares with UTC at once
                if tiers is not None:  # the month ends passed: members by tier then
                    while len(snapshots) < len(boundaries) and boundaries[len(snapshots)] <= (
                        occurred_at
                    ):
                        snapshots.append(tiers.counts(boundaries[len(snapshots)]))
            month.activities += 1
            month.actual_points += points
            if member_id is None:
                continue
            if tiers is not None:
                tiers.before(member_id, occurred_at)
                before = month.simulated_points
            if kind == "purchase":
                facts = engine.ActivityFacts(
                    "purchase",
                    occurred_at,
                    amount or 0,
                    currency,
                    store,
                    channel,
                    decode_body(body).lines if reads_lines else (),
                )
                month.simulated_points += earned(member_id, facts, activity_id)
            elif kind == "return":
                month.simulated_points += returned(original_id, amount or 0)
            elif (event_type or "event") in triggers:  # else no rule: nothing to earn
                facts = engine.ActivityFacts(
                    "event",
                    occurred_at,
                    event_type=event_type,
                    attributes=decode_body(body).attributes or engine.NO_ATTRIBUTES,
                )
                month.simulated_points += earned(member_id, facts)
            if tiers is not None:
                tiers.add(
                    member_id,
                    occurred_at,
                    kind,
                    amount,
                    event_type,
                    month.simulated_points - before,
                )
        count += len(chunk)
        if progress is not None:
            progress(len(chunk))
    if tiers is not None:
        while len(snapshots) < len(boundaries):
            snapshots.append(tiers.counts(boundaries[len(snapshots)]))
    return _Part(months, snapshots, count)


def _in_processes(
    url: str,
    program_id: int,
    spec: ProgramSpec,
    first: datetime,
    end: datetime,
    boundaries: list[datetime],
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[_Part]:
    """_replay() of each of `workers` parts, each in a process of its own (spawned: a fork
    would share the parent's connections and threads), its progress passed on."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    document = spec.model_dump(mode="json")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_set_progress, initargs=(queue,)
    ) as pool:
        futures = [
            pool.submit(_replay_part, url, program_id, document, first, end, boundaries, part)
            for part in ((k, workers) for k in range(workers))
        ]
        told = 0  # rows the workers said they replayed
        while not all(future.done() for future in futures):
            with contextlib.suppress(Empty):
                told += _tell(progress, queue.get(timeout=0.2))
        parts = [future.result() for future in futures]  # a worker's error is raised here
        replayed = sum(part.activities for part in parts)
        with contextlib.suppress(Empty):  # what is still on its way
            while told < replayed:
                told += _tell(progress, queue.get(timeout=5))
        return parts


def _tell(progress: Callable[[int], None] | None, rows: int) -> int:
    if progress is not None:
        progress(rows)
    return rows


_progress: Any = None  # in a worker process: the queue to tell the parent of rows replayed


def _set_progress(queue: Any) -> None:
    global _progress
    _progress = queue


def _replay_part(
    url: str,
    program_id: int,
    document: dict[str, Any],
    first: datetime,
    end: datetime,
    boundaries: list[datetime],
    part: repository.Part,
) -> _Part:
    """_replay() in a worker process, on a connection of its own."""
    db = connect(url, pool_size=1)
    try:
        with db.read() as conn:
            return _replay(
                conn,
                program_id,
                ProgramSpec.model_validate(document),
                first,
                end,
                boundaries,
                _progress.put,
                part,
            )
    finally:
        db.dispose()


def _add_tiers(
    conn: Connection,
    program_id: int,
    spec: ProgramSpec,
    months: dict[str, Month],
    boundaries: list[datetime],
    snapshots: list[dict[str, int]],
    rows: dict[int, Any],
) -> None:
    """Each month's members by tier: simulated (`snapshots`) and real (the tier history of
    the program's current version's tiers; None when it has none and never had)."""
    current = [tier.id for tier in programs.current(conn, program_id).spec.tiers]
    changes = repository.tier_changes(conn, program_id, boundaries[-1])
    actual: list[dict[str, int]] | list[None]
    if current or changes:
        entry = current[0] if current else spec.tiers[0].id
        enrolled = [r.enrolled_at for r in rows.values() if r.enrolled_at is not None]
        actual = tier_replay.actual_counts(changes, entry, current, enrolled, boundaries)
    else:
        actual = [None] * len(boundaries)
    zone = spec.zone
    for boundary, simulated, real in zip(boundaries, snapshots, actual, strict=True):
        key = (boundary - timedelta(microseconds=1)).astimezone(zone).strftime("%Y-%m")
        month = months.get(key) or months.setdefault(key, Month(key))
        month.simulated_tiers, month.actual_tiers = simulated, real


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
        self.points = replay.plan(self.program).points
        self.returned_ids = returned
        self.program_counts: dict[str, int] = {}
        #: member id -> (snapshot, counters)
        self.members: dict[int, tuple[engine.MemberSnapshot, dict[str, tuple[int, int]]]] = {}
        self.purchases: dict[int, tuple[int, int]] = {}  # id -> (amount, simulated points)
        #: The month's vouchers granted, per reward (the replay points it at each month's).
        self.vouchers: dict[str, int] = {}

    def add_member(self, snapshot: engine.MemberSnapshot) -> None:
        self.members[snapshot.id] = (snapshot, {})

    def set_tier(self, member_id: int, tier: str) -> None:
        """The member's replayed tier: what the rules see as `tier.name` from now on."""
        snapshot, counts = self.members[member_id]
        self.members[member_id] = (dataclasses.replace(snapshot, tier=tier), counts)

    def earned(
        self, member_id: int, facts: engine.ActivityFacts, purchase_id: int | None = None
    ) -> int:
        """The points `facts` earn under the proposed program, and the vouchers its rules
        grant counted in the month's; a purchase's points are remembered for its returns.
        rules.replay's plan gives the points engine.evaluate() would, counts the vouchers
        its `rewards` would hold, and updates the counters as apply_counters() would."""
        member = self.members.get(member_id)
        if member is None:
            return 0
        snapshot, counts = member
        points = self.points(facts, snapshot, counts, self.program_counts, self.vouchers)
        if purchase_id in self.returned_ids:
            self.purchases[purchase_id] = (facts.amount, points)
        return points

    def returned(self, purchase_id: int | None, amount: int) -> int:
        """A return takes back the share of the purchase's points that it is of its amount."""
        if purchase_id is None:
            return 0
        bought, points = self.purchases.get(purchase_id, (0, 0))
        return -(points * amount // bought) if bought else 0


class StoredBody(msgspec.Struct, gc=False):
    """What a replay reads of a stored body (its other fields are skipped unread)."""

    lines: tuple[engine.Line, ...] = ()
    attributes: dict[str, Any] = {}


_decode_stored = msgspec.json.Decoder(StoredBody).decode


def decode_body(text: str | bytes | dict[str, Any] | None) -> StoredBody:
    """A stored body's lines and attributes, decoded straight into engine.Line structs (in
    C, a quarter of json.loads' time for a basket, with no dict per line); bodies in another
    shape than the API stores (e.g. a quantity left out, an amount as text) the lenient way."""
    if text is None:
        return _NO_BODY
    if not isinstance(text, dict):
        try:
            return _decode_stored(text)
        except msgspec.MsgspecError:
            text = json.loads(text)
    assert isinstance(text, dict)
    return StoredBody(
        tuple(
            engine.Line(
                ln["sku"],
                int(ln.get("quantity", 1)),
                int(ln["amount"]),
                ln.get("category"),
                tuple(ln.get("labels", ())),
            )
            for ln in text.get("lines", ())
        ),
        text.get("attributes") or {},
    )


_NO_BODY = StoredBody()
