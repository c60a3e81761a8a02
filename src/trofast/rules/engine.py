"""Evaluate a program version against an activity. Pure: no database, no I/O (rule 6).

(program version, activity, member snapshot, counters) -> effects. A program is compiled
once per version (conditions become functions, rules are sorted by (priority, id)); the
evaluation of one activity then builds one flat context and walks its rules in order.

It runs for every activity received, so the work that does not depend on the activity is
done at compile time: line filters as sets, counter key prefixes, what the context must
hold, which rules a given product line passes (remembered per program); and what depends
only on the local date (the `now.*` fields and counter period keys) is computed once per
date. benchmarks/rules.py measures it. A what-if replay, which needs only the points of
millions of activities, takes the rules through a plan of its own (rules.replay), held to
this module's evaluate() by tests (decision 0009).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

import msgspec

from trofast.ledger.allocation import expiry_after_months, expiry_end_of_year, vesting_time
from trofast.programs.spec import ProgramSpec
from trofast.rules import conditions
from trofast.rules.conditions import Context
from trofast.rules.document import (
    Cashback,
    EarnRate,
    Effect,
    Expiry,
    ExpiryAfterMonths,
    ExpiryEndOfYear,
    FromAttribute,
    Limits,
    LineFilter,
    MemberLimit,
    Multiplier,
    PerAmount,
    Period,
    PerUnit,
    Rule,
    Stamp,
    StampCard,
)

BASE_RULE = "base"


#: The attributes of an activity that has none (read-only, so one can be shared).
NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


class Line(msgspec.Struct, frozen=True, gc=False):
    """One basket line. A msgspec struct rather than a frozen dataclass or a named tuple: a
    replay builds millions of them, decoded straight from stored JSON (analytics.simulate),
    and a struct is built in a quarter of a named tuple's time and read in half."""

    sku: str
    quantity: int
    amount: int
    category: str | None = None
    labels: tuple[str, ...] = ()


class ActivityFacts(msgspec.Struct, frozen=True, gc=False):
    """What the rules may read about an activity (immutable; a struct for the same reason
    as Line: built once per activity of a replay)."""

    type: str
    occurred_at: datetime
    amount: int = 0
    currency: str | None = None
    store: str | None = None
    channel: str | None = None
    lines: tuple[Line, ...] = ()
    event_type: str | None = None
    attributes: Mapping[str, Any] = NO_ATTRIBUTES

    @property
    def trigger(self) -> str:
        """What rules listen for: `purchase` or the event type."""
        if self.type == "event" and self.event_type:
            return self.event_type
        return self.type


@dataclass(frozen=True)
class MemberSnapshot:
    """What the rules may read about the member."""

    id: int
    status: str
    birth_date: date | None = None
    enrolled_at: datetime | None = None
    tags: tuple[str, ...] = ()
    channel: str | None = None
    tier: str | None = None
    #: The paid-membership plan the member is on now (trial, active or grace), if any.
    plan: str | None = None


@dataclass(frozen=True)
class Counters:
    """The past that limits and stamp cards depend on, by counter key.

    `member`: (points, times) per `rule:period:key` for this member, and stamps per
    `stamps:card`; `program`: points a rule has issued in total (`rule:budget`).
    """

    member: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    program: Mapping[str, int] = field(default_factory=dict)


NO_COUNTERS = Counters()


class PointsEffect(NamedTuple):
    """Credit `points` to the member, as one lot, attributed to `rule`.

    The results of an evaluation (this, CashbackEffect, CounterDelta, RuleOutcome) are named
    tuples, immutable like frozen dataclasses but built in a third of the time: a 50-rule
    evaluation makes about 35 of them.
    """

    points: int
    rule: str
    vests_at: datetime | None
    expires_at: datetime | None


class CashbackEffect(NamedTuple):
    """Credit `amount` minor units to the member's money wallet."""

    amount: int
    rule: str


class RewardGrant(NamedTuple):
    """Give the member a voucher for `reward` (a catalogue id), attributed to `rule`."""

    reward: str
    rule: str


class CounterDelta(NamedTuple):
    """Add `points` and `times` to a counter (`member` False: program-wide)."""

    key: str
    points: int
    times: int
    member: bool = True


class RuleOutcome(NamedTuple):
    """Why a rule gave what it gave (dry runs and simulations show these)."""

    rule: str
    value: int
    note: str = ""


@dataclass
class Evaluation:
    points: list[PointsEffect] = field(default_factory=list)
    cashback: list[CashbackEffect] = field(default_factory=list)
    rewards: list[RewardGrant] = field(default_factory=list)
    counters: list[CounterDelta] = field(default_factory=list)
    outcomes: list[RuleOutcome] = field(default_factory=list)

    @property
    def total_points(self) -> int:
        return sum(e.points for e in self.points)


def points_for_amount(amount: int, rate: EarnRate | PerAmount) -> int:
    """The one place that turns money (minor units) into points: rounded down, never negative."""
    if amount <= 0:
        return 0
    return (amount // rate.per_amount) * rate.points


def lot_dates(
    spec: ProgramSpec,
    earned_at: datetime,
    *,
    vesting_days: int | None = None,
    expiry: Expiry | None = None,
) -> tuple[datetime | None, datetime | None]:
    """(vests_at, expires_at) for points earned at `earned_at`, in UTC; a rule may override
    both. Months count in the program's zone, never in the offset the activity was sent with."""
    policy = expiry or spec.expiry
    expires_at: datetime | None = None
    if isinstance(policy, ExpiryAfterMonths):
        local = earned_at.astimezone(spec.zone)
        expires_at = expiry_after_months(local, policy.months).astimezone(UTC)
    elif isinstance(policy, ExpiryEndOfYear):
        expires_at = expiry_end_of_year(earned_at, policy.years_after, spec.zone).astimezone(UTC)
    days = spec.vesting_days if vesting_days is None else vesting_days
    vests_at = vesting_time(earned_at, days)
    return (None if vests_at is None else vests_at.astimezone(UTC)), expires_at


# --- compilation -------------------------------------------------------------------------

#: Member fields that are computed from the snapshot (the others are copied as they are).
_DERIVED_MEMBER_FIELDS = frozenset(
    {"member.age", "member.birthday_today", "member.birthday_week", "member.days_enrolled"}
)
#: How many distinct lines (sku, category, labels) a compiled program remembers the matching
#: rules of; past that the memory starts again (a server keeps program versions for long).
LINE_MEMORY = 100_000

_LineShape = tuple[str, str | None, tuple[str, ...]]


@dataclass(frozen=True)
class LineLists:
    """A line filter's lists as sets; `everything` when it names nothing to include."""

    skus: frozenset[str]
    categories: frozenset[str | None]
    labels: frozenset[str]
    exclude_skus: frozenset[str]
    exclude_categories: frozenset[str | None]
    everything: bool

    @classmethod
    def of(cls, wanted: LineFilter) -> LineLists:
        return cls(
            skus=frozenset(wanted.skus),
            categories=frozenset(wanted.categories),
            labels=frozenset(wanted.labels),
            exclude_skus=frozenset(wanted.exclude_skus),
            exclude_categories=frozenset(wanted.exclude_categories),
            everything=not (wanted.skus or wanted.categories or wanted.labels),
        )

    def let_through(self, sku: str, category: str | None, labels: tuple[str, ...]) -> bool:
        if sku in self.exclude_skus or category in self.exclude_categories:
            return False
        return (
            self.everything
            or sku in self.skus
            or category in self.categories
            or not self.labels.isdisjoint(labels)
        )


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its conditions as functions, its lists as sets."""

    rule: Rule
    index: int  # place in (priority, id) order; keys the caches of one evaluation
    kind: str  # the effect's kind: cheaper to compare than isinstance with pydantic classes
    when: conditions.Predicate | None
    line_when: conditions.Predicate | None
    line_filter: LineFilter | None
    lists: LineLists | None
    #: (limit, counter key without its period bucket), e.g. "coffee:week:" + "2026-W03"
    limit_keys: tuple[tuple[MemberLimit, str], ...]
    budget_key: str
    # What most rules lack, so that they skip it at once:
    dated: bool  # active_from or active_until
    limited: bool  # any limit
    counted: bool  # a per-member limit or a budget: counters to update
    #: A rule about certain lines, with no minimum amount and in no best-of group: where
    #: none of a basket's lines pass its lists it gives nothing and notes nothing, and it can
    #: be left out of the evaluation before its conditions are read.
    skippable: bool


@dataclass(frozen=True)
class CompiledProgram:
    """A program version ready to evaluate: rules per trigger in (priority, id) order."""

    spec: ProgramSpec
    by_trigger: Mapping[str, tuple[CompiledRule, ...]]
    by_id: Mapping[str, CompiledRule]
    cards: Mapping[str, StampCard]
    stateful_triggers: frozenset[str]
    fields: frozenset[str]
    line_conditions: bool
    zone: ZoneInfo
    #: the rules of each best-of group, per (trigger, group)
    groups: Mapping[tuple[str, str], tuple[CompiledRule, ...]]
    #: whether an evaluation needs these parts of the context
    reads_time: bool
    reads_clock: bool  # now.hour or now.minute: the local time, not only the day
    reads_attributes: bool
    member_fields: frozenset[str]
    #: whether a purchase's points can depend on its lines (beyond their total, which is the
    #: purchase amount: the API checks that they add up)
    reads_lines: bool
    #: triggers with skippable rules
    skippable: Mapping[str, bool]
    #: earn_multiplier_percent per tier id (`tier`) and per plan id (`plan`), for `by`
    percents: Mapping[str, Mapping[str, int]]
    _filtered: tuple[CompiledRule, ...] = field(repr=False)
    _line_rules: dict[_LineShape, tuple[int, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: The same by sku alone, for the (category, labels) first seen with it: a look-up by
    #: one string, with no key tuple to build and hash (`_Basket`).
    _by_sku: dict[str, tuple[str | None, tuple[str, ...], tuple[int, ...]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def needs(self, prefix: str) -> bool:
        """Whether any condition reads a field starting with `prefix`."""
        return any(f.startswith(prefix) for f in self.fields)

    def rules_for_line(self, line: Line) -> tuple[int, ...]:
        """Indexes of the rules whose line lists let `line` through (their `when` aside).

        That depends only on the line's sku, category and labels, which repeat from basket to
        basket, so it is remembered: one look-up per line instead of one test per rule.
        """
        labels = line.labels
        if type(labels) is not tuple:  # a caller's list would not be hashable
            labels = tuple(labels)
        shape = (line.sku, line.category, labels)
        found = self._line_rules.get(shape)
        if found is None:
            found = tuple(
                c.index
                for c in self._filtered
                if c.lists is not None and c.lists.let_through(*shape)
            )
            if len(self._line_rules) >= LINE_MEMORY:
                self._line_rules.clear()
                self._by_sku.clear()
            self._line_rules[shape] = found
            self._by_sku.setdefault(shape[0], (shape[1], shape[2], found))
        return found


_compiled: dict[int, tuple[ProgramSpec, CompiledProgram]] = {}
_compile_lock = threading.Lock()


def compile_program(spec: ProgramSpec) -> CompiledProgram:
    """Compile once per program version (cached by the spec object, which is immutable)."""
    hit = _compiled.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    rules = spec.rules
    if rules is None:
        rules = []
        if spec.earn.points > 0:  # `earn.points: 0` is valid and earns nothing
            rules = [
                Rule(
                    id=BASE_RULE,
                    effect=PerAmount(
                        kind="per_amount", points=spec.earn.points, per_amount=spec.earn.per_amount
                    ),
                ),
                *_implicit_multipliers(spec),
            ]
    compiled_rules = [
        CompiledRule(
            rule=rule,
            index=index,
            kind=rule.effect.kind,
            when=conditions.compile_all(rule.when),
            line_when=conditions.compile_all(rule.lines.when) if rule.lines else None,
            line_filter=rule.lines,
            lists=LineLists.of(rule.lines) if rule.lines else None,
            limit_keys=tuple(
                (limit, f"{rule.id}:{limit.period.value}:") for limit in rule.limits.per_member
            ),
            budget_key=budget_key(rule.id),
            dated=rule.active_from is not None or rule.active_until is not None,
            limited=rule.limits != Limits(),
            counted=bool(rule.limits.per_member) or rule.limits.budget is not None,
            skippable=rule.lines is not None and rule.min_amount == 0 and rule.group is None,
        )
        for index, rule in enumerate(sorted(rules, key=lambda r: (r.priority, r.id)))
    ]
    by_trigger: dict[str, list[CompiledRule]] = {}
    groups: dict[tuple[str, str], list[CompiledRule]] = {}
    for compiled_rule in compiled_rules:
        by_trigger.setdefault(compiled_rule.rule.on, []).append(compiled_rule)
        if compiled_rule.rule.group is not None:
            key = (compiled_rule.rule.on, compiled_rule.rule.group)
            groups.setdefault(key, []).append(compiled_rule)
    fields = frozenset(
        clause.field
        for rule in rules
        for clause in [*rule.when, *(rule.lines.when if rule.lines else [])]
    )
    program = CompiledProgram(
        spec=spec,
        by_trigger={k: tuple(v) for k, v in by_trigger.items()},
        by_id={c.rule.id: c for c in compiled_rules},
        cards={card.id: card for card in spec.stamp_cards},
        stateful_triggers=frozenset(
            c.rule.on
            for c in compiled_rules
            if c.rule.limits.per_member
            or c.rule.limits.budget is not None
            or isinstance(c.rule.effect, Stamp | Cashback)
        ),
        fields=fields,
        line_conditions=any(c.line_when is not None for c in compiled_rules),
        zone=spec.zone,
        groups={k: tuple(v) for k, v in groups.items()},
        reads_time=any(f.startswith("now.") for f in fields),
        reads_clock=bool(fields & {"now.hour", "now.minute"}),
        reads_attributes=any(f.startswith("activity.attributes.") for f in fields),
        member_fields=fields & _DERIVED_MEMBER_FIELDS,
        reads_lines=any(_reads_lines(c.rule) for c in by_trigger.get("purchase", ())),
        skippable={k: any(c.skippable for c in v) for k, v in by_trigger.items()},
        percents={
            "tier": {tier.id: tier.earn_multiplier_percent for tier in spec.tiers},
            "plan": {plan.id: plan.earn_multiplier_percent for plan in spec.membership_plans},
        },
        _filtered=tuple(c for c in compiled_rules if c.lists is not None),
    )
    with _compile_lock:
        _compiled[id(spec)] = (spec, program)
    return program


def _implicit_multipliers(spec: ProgramSpec) -> list[Rule]:
    """A program without `rules:` earns by `earn` alone: its tiers' and plans'
    earn_multiplier_percent multiply those base points (rules `tier-multiplier`,
    `plan-multiplier`; a program with rules says so itself with `by`)."""
    found = []
    for by, percents in (
        ("tier", [tier.earn_multiplier_percent for tier in spec.tiers]),
        ("plan", [plan.earn_multiplier_percent for plan in spec.membership_plans]),
    ):
        if any(percent > 100 for percent in percents):
            effect = Multiplier(kind="multiplier", by=by, of=[BASE_RULE])
            found.append(Rule(id=f"{by}-multiplier", priority=1000, effect=effect))
    return found


def _reads_lines(rule: Rule) -> bool:
    """Whether the rule's result can depend on a purchase's lines rather than its amount.

    Without a line filter a rule takes all lines, whose amounts add up to the purchase's; but
    it counts their quantities as units, where a purchase without lines is one unit.
    """
    effect = rule.effect
    return (
        rule.lines is not None
        or isinstance(effect, PerUnit)
        or (isinstance(effect, Stamp) and effect.per == "unit")
    )


# --- counters ----------------------------------------------------------------------------


def period_key(period: Period, day: date) -> str:
    """The counter bucket of `day` (a local date) for `period`."""
    if period is Period.day:
        return day.isoformat()
    if period is Period.week:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period is Period.month:
        return f"{day.year}-{day.month:02d}"
    if period is Period.year:
        return str(day.year)
    return "ever"


def limit_key(rule_id: str, limit: MemberLimit, day: date) -> str:
    return f"{rule_id}:{limit.period.value}:{period_key(limit.period, day)}"


def budget_key(rule_id: str) -> str:
    return f"{rule_id}:budget"


def stamp_key(card_id: str) -> str:
    return f"stamps:{card_id}"


def counter_keys(program: CompiledProgram, facts: ActivityFacts) -> tuple[set[str], set[str]]:
    """(member keys, program keys) an evaluation of `facts` may read."""
    day = facts.occurred_at.astimezone(program.zone).date()
    member: set[str] = set()
    programwide: set[str] = set()
    for compiled in program.by_trigger.get(facts.trigger, ()):
        rule = compiled.rule
        member.update(limit_key(rule.id, limit, day) for limit in rule.limits.per_member)
        if rule.limits.budget is not None:
            programwide.add(budget_key(rule.id))
        if isinstance(rule.effect, Stamp):
            member.add(stamp_key(rule.effect.card))
    return member, programwide


def apply_counters(
    member: dict[str, tuple[int, int]], program: dict[str, int], deltas: list[CounterDelta]
) -> None:
    """Add an evaluation's counter deltas to in-memory counters (batches, simulations)."""
    for delta in deltas:
        if delta.member:
            points, times = member.get(delta.key, (0, 0))
            member[delta.key] = (points + delta.points, times + delta.times)
        else:
            program[delta.key] = program.get(delta.key, 0) + delta.points


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalDay:
    """What conditions and counter keys read of a local date."""

    date: date
    fields: Mapping[str, Any]  # the `now.*` fields of the date
    buckets: Mapping[Period, str]  # period_key() of the date, per period


@functools.lru_cache(maxsize=1024)
def day_of(day: date) -> LocalDay:
    """Computed once per date: activities come many to a day (and a replay in time order)."""
    fields = {
        "now.date": day.isoformat(),
        "now.year": day.year,
        "now.month": day.month,
        "now.day": day.day,
        "now.weekday": day.isoweekday(),
    }
    return LocalDay(day, fields, {p: period_key(p, day) for p in Period})


def rule_context(
    program: CompiledProgram, facts: ActivityFacts, member: MemberSnapshot, day: LocalDay
) -> dict[str, Any]:
    """The flat context the conditions read (docs/program-file.md lists its fields) on the
    activity's local `day`: only the parts that some condition of the program reads."""
    ctx = _activity_fields(facts, member)
    if program.reads_time:
        ctx.update(day.fields)
        if program.reads_clock:
            local = facts.occurred_at.astimezone(program.zone)
            ctx["now.hour"] = local.hour
            ctx["now.minute"] = local.minute
    if program.reads_attributes:
        for name, value in facts.attributes.items():
            ctx[f"activity.attributes.{name}"] = value
    if program.member_fields:
        ctx.update(_member_context(program.zone, member, day.date, program.member_fields))
    return ctx


def _activity_fields(facts: ActivityFacts, member: MemberSnapshot) -> dict[str, Any]:
    return {
        "activity.type": facts.type,
        "activity.amount": facts.amount,
        "activity.currency": facts.currency,
        "activity.store": facts.store,
        "activity.channel": facts.channel,
        "activity.event_type": facts.event_type,
        "member.id": member.id,
        "member.status": member.status,
        "member.tags": member.tags,
        "member.channel": member.channel,
        "tier.name": member.tier,
        "member.plan": member.plan,
    }


def _member_context(
    zone: ZoneInfo, member: MemberSnapshot, today: date, wanted: frozenset[str]
) -> dict[str, Any]:
    """The `wanted` fields of _DERIVED_MEMBER_FIELDS that the snapshot has data for."""
    ctx: dict[str, Any] = {}
    born = member.birth_date
    if born is not None:
        if "member.age" in wanted:
            ctx["member.age"] = (
                today.year - born.year - ((today.month, today.day) < (born.month, born.day))
            )
        if "member.birthday_today" in wanted:
            ctx["member.birthday_today"] = _birthday_in(born, today.year) == today
        if "member.birthday_week" in wanted:
            # The ISO week is Monday to Sunday and may span New Year: a birthday in either
            # year can fall in it.
            monday = today - timedelta(days=today.weekday())
            sunday = monday + timedelta(days=6)
            ctx["member.birthday_week"] = any(
                monday <= _birthday_in(born, year) <= sunday for year in {monday.year, sunday.year}
            )
    if member.enrolled_at is not None and "member.days_enrolled" in wanted:
        ctx["member.days_enrolled"] = (today - member.enrolled_at.astimezone(zone).date()).days
    return ctx


def _birthday_in(born: date, year: int) -> date:
    try:
        return born.replace(year=year)
    except ValueError:  # 29 February in a common year: the 28th
        return date(year, 2, 28)


class _Basket:
    """The lines of one activity, and which of them each rule takes, found once."""

    __slots__ = ("_line_ctx", "_sets", "_sums", "_taken", "ctx", "lines", "listed")

    def __init__(self, program: CompiledProgram, lines: tuple[Line, ...], ctx: Context) -> None:
        self.lines = lines
        self.ctx = ctx
        # rule index -> positions of the lines its lists let through, and their [amount, units]
        listed: dict[int, list[int]] = {}
        sums: dict[int, list[int]] = {}
        self.listed = listed
        self._sums = sums
        if program._filtered:
            by_sku = program._by_sku
            for position, line in enumerate(lines):
                hit = by_sku.get(line.sku)
                if hit is not None and hit[0] == line.category and hit[1] == line.labels:
                    indexes = hit[2]
                else:  # not seen yet, seen with another category or labels, or labels a list
                    indexes = program.rules_for_line(line)
                amount, units = line.amount, line.quantity
                for index in indexes:
                    found = listed.get(index)
                    if found is None:
                        listed[index] = [position]
                        sums[index] = [amount, units]
                    else:
                        found.append(position)
                        both = sums[index]
                        both[0] += amount
                        both[1] += units
        self._taken: dict[int, tuple[Sequence[int], int, int]] = {}
        self._sets: dict[int, set[int]] = {}
        self._line_ctx: dict[int, Context] = {}

    def take(self, compiled: CompiledRule) -> tuple[Sequence[int], int, int]:
        """(positions, amount, units) of the lines `compiled` qualifies: all lines, or those
        its filter lets through."""
        key = compiled.index if compiled.line_filter is not None else -1
        taken = self._taken.get(key)
        if taken is None:
            chosen: Sequence[int]
            if compiled.line_filter is None:
                chosen = range(len(self.lines))
            else:
                chosen = self.listed.get(compiled.index, [])
                line_when = compiled.line_when
                if line_when is not None:
                    chosen = [p for p in chosen if line_when(self._line_context(p))]
                elif chosen:  # added up as the lines were listed
                    amount, units = self._sums[compiled.index]
                    taken = self._taken[key] = (chosen, amount, units)
                    return taken
            taken = self._taken[key] = (chosen, *self.totals(chosen))
        return taken

    def chosen_set(self, compiled: CompiledRule) -> set[int]:
        """The positions of take(), as a set."""
        found = self._sets.get(compiled.index)
        if found is None:
            found = self._sets[compiled.index] = set(self.take(compiled)[0])
        return found

    def totals(self, positions: Iterable[int]) -> tuple[int, int]:
        """(amount, units) of the lines at `positions`."""
        amount = units = 0
        lines = self.lines
        for position in positions:
            line = lines[position]
            amount += line.amount
            units += line.quantity
        return amount, units

    def _line_context(self, position: int) -> Context:
        ctx = self._line_ctx.get(position)
        if ctx is None:
            ctx = self._line_ctx[position] = {**self.ctx, **line_context(self.lines[position])}
        return ctx


class _Run:
    """One evaluation under way: what its rules share.

    The member's counters are read through `count()`: what this evaluation changed, over
    what it was given. The given mapping is never written to, nor copied.
    """

    __slots__ = (
        "basket",
        "buckets",
        "changed",
        "counting",
        "ctx",
        "dates",
        "day",
        "earned",
        "facts",
        "given",
        "program",
        "result",
        "shared",
    )

    def __init__(
        self,
        program: CompiledProgram,
        facts: ActivityFacts,
        ctx: Context,
        day: LocalDay,
        result: Evaluation,
        given: Mapping[str, tuple[int, int]],
        changed: dict[str, tuple[int, int]],
        shared: Mapping[str, int],
        counting: bool,
        dates: bool,
    ) -> None:
        self.program = program
        self.facts = facts
        self.ctx = ctx
        self.day = day.date
        self.buckets = day.buckets
        self.counting = counting
        self.given = given
        self.changed = changed
        self.shared = shared
        self.dates = dates
        self.result = result
        self.earned: dict[str, int] = {}
        self.basket = _Basket(program, facts.lines, ctx) if facts.lines else None

    def count(self, key: str) -> tuple[int, int]:
        """(points, times) of a member counter, as this evaluation has left it so far."""
        found = self.changed.get(key)
        return found if found is not None else self.given.get(key, (0, 0))


def evaluate(
    spec: ProgramSpec,
    facts: ActivityFacts,
    member: MemberSnapshot,
    counters: Counters | None = NO_COUNTERS,
    *,
    dates: bool = True,
) -> Evaluation:
    """The effects of `facts` for `member`. `counters=None` ignores limits and budgets
    (used to price what the rest of a partly returned purchase keeps); `dates=False` skips
    vesting and expiry dates (simulations need only the points)."""
    result = Evaluation()
    if member.status != "active":
        return result
    program = compile_program(spec)
    rules = program.by_trigger.get(facts.trigger)
    if not rules:
        return result
    given = counters.member if counters is not None else {}
    shared = counters.program if counters is not None else {}
    _walk(program, rules, facts, member, result, given, {}, shared, counters is not None, dates)
    return result


def _walk(
    program: CompiledProgram,
    rules: Sequence[CompiledRule],
    facts: ActivityFacts,
    member: MemberSnapshot,
    result: Evaluation,
    given: Mapping[str, tuple[int, int]],
    changed: dict[str, tuple[int, int]],
    shared: Mapping[str, int],
    counting: bool,
    dates: bool,
) -> _Run:
    """Walk the rules of one trigger in order, recording their effects in `result` (replays
    take their own way: rules.replay)."""
    local = facts.occurred_at.astimezone(program.zone)
    day = day_of(local.date())
    run = _Run(
        program,
        facts,
        rule_context(program, facts, member, day),
        day,
        result,
        given,
        changed,
        shared,
        counting,
        dates,
    )
    if program.skippable.get(facts.trigger):
        # Rules about certain lines that none of the basket's lines are: they give nothing
        # and say nothing (see CompiledRule.skippable), so they are left out at once.
        listed = run.basket.listed if run.basket is not None else {}
        rules = [c for c in rules if not c.skippable or c.index in listed]
    done_groups: set[str] = set()
    ctx = run.ctx
    for compiled in rules:
        rule = compiled.rule
        if rule.group is None:
            # _apply() inlined: most rules stop at their conditions
            if compiled.dated and not _holds(run, compiled):
                continue
            when = compiled.when
            if when is not None and not when(ctx):
                continue
            value, note = _give(run, compiled, False)
            if value or note:
                result.outcomes.append(RuleOutcome(rule.id, value, note))
            if value > 0 and rule.stop_after:
                break
            continue
        if rule.group in done_groups:
            continue
        done_groups.add(rule.group)
        # A best-of group is decided where its first rule runs: the best wins, alone.
        candidates = [
            (_apply(run, c, dry=True)[0], c) for c in program.groups[(rule.on, rule.group)]
        ]
        best_value = max(value for value, _ in candidates)
        winner = next(c for value, c in candidates if value == best_value)
        for value, c in candidates:
            if c is not winner and value > 0:
                result.outcomes.append(RuleOutcome(c.rule.id, 0, "not the best of its group"))
        compiled = winner
        rule = compiled.rule
        value, note = _apply(run, compiled, dry=False)
        if value or note:
            result.outcomes.append(RuleOutcome(rule.id, value, note))
        if value > 0 and rule.stop_after:
            break
    return run


def line_context(line: Line) -> dict[str, Any]:
    """The `line.*` fields of a line condition."""
    return {
        "line.sku": line.sku,
        "line.category": line.category,
        "line.labels": line.labels,
        "line.quantity": line.quantity,
        "line.amount": line.amount,
    }


def _apply(run: _Run, compiled: CompiledRule, *, dry: bool) -> tuple[int, str]:
    """What one rule gives: (value, note). Unless `dry`, records its effects in the result."""
    if not _holds(run, compiled):
        return 0, ""
    return _give(run, compiled, dry)


def _holds(run: _Run, compiled: CompiledRule) -> bool:
    """Whether the rule is active on the day and its conditions hold (else it gives nothing
    and says nothing)."""
    if compiled.dated:
        rule = compiled.rule
        day = run.day
        if rule.active_from is not None and day < rule.active_from:
            return False
        if rule.active_until is not None and day > rule.active_until:
            return False
    return compiled.when is None or compiled.when(run.ctx)


def _give(run: _Run, compiled: CompiledRule, dry: bool) -> tuple[int, str]:
    """_apply() of a rule that _holds()."""
    rule = compiled.rule
    chosen: Sequence[int] = ()
    if run.basket is not None:
        chosen, amount, units = run.basket.take(compiled)
    elif compiled.line_filter is not None:
        amount, units = 0, 0
    else:
        amount, units = run.facts.amount, 1
    if amount < rule.min_amount:
        return 0, f"below the minimum amount {rule.min_amount}" if rule.min_amount else ""
    if compiled.line_filter is not None and not chosen:
        return 0, ""  # a rule about certain lines gives nothing to a basket without them
    effect = rule.effect
    counting = run.counting
    if effect.kind == "stamp":
        if counting and _times_used_up(compiled, run):
            return 0, "no more stamps this period"
        value, note = _stamp(run, rule, effect, units, dry)
        if not dry and counting and note:
            _count(run, compiled, 0)
        return value, note
    if effect.kind == "reward":  # gives no points: a voucher, limited by `times`
        if counting and _times_used_up(compiled, run):
            return 0, "no more of this reward this period"
        if not dry:
            run.result.rewards.append(RewardGrant(effect.reward, rule.id))
            if counting and compiled.counted:
                _count(run, compiled, 0)
        return 0, f"grants reward {effect.reward}"
    raw = _raw_value(run, compiled, effect, chosen, amount, units)
    if raw <= 0:
        return 0, ""
    value, note = _limit(run, compiled, raw) if compiled.limited else (raw, "")
    if effect.kind == "multiplier" and effect.by is not None and not note:
        note = f"{effect.by} {_standing(run, effect)}: {_percent(run, effect)} %"
    if dry or value <= 0:
        return value, note
    run.earned[rule.id] = value
    result = run.result
    if effect.kind == "cashback":
        result.cashback.append(CashbackEffect(value, rule.id))
    else:
        vests_at, expires_at = _dates(run.program, rule, run.facts) if run.dates else (None, None)
        result.points.append(PointsEffect(value, rule.id, vests_at, expires_at))
    if counting and compiled.counted:
        _count(run, compiled, value)
    return value, note


def _raw_value(
    run: _Run,
    compiled: CompiledRule,
    effect: Effect,
    chosen: Sequence[int],
    amount: int,
    units: int,
) -> int:
    if effect.kind == "per_amount":
        return points_for_amount(amount, effect)
    if effect.kind == "fixed":
        return effect.points
    if effect.kind == "per_unit":
        return effect.points * units
    if effect.kind == "cashback":
        return amount * effect.basis_points // 10_000
    if effect.kind == "attribute":
        return attribute_points(effect, run.facts.attributes)
    if effect.kind == "multiplier":
        percent = _percent(run, effect)
        extra = 0
        earned = run.earned
        for target_id in effect.of:
            if earned.get(target_id, 0) <= 0:
                continue
            target = run.program.by_id[target_id]
            if compiled.line_filter is None:
                base = earned[target_id]
            else:
                base = min(earned[target_id], _restricted(run, target, chosen))
            extra += base * (percent - 100) // 100
        return extra
    return 0


def attribute_points(effect: FromAttribute, attributes: Mapping[str, Any]) -> int:
    """Points from an activity attribute (airline style): `attribute` times `points` per
    `per`, times the percent factor of `factor_by`'s value; 0 for a missing or non-positive
    number."""
    base = attributes.get(effect.attribute)
    if not isinstance(base, int | float) or isinstance(base, bool) or base <= 0:
        return 0
    factor = effect.default_factor
    if effect.factor_by is not None:
        factor = effect.factors.get(str(attributes.get(effect.factor_by)), factor)
    return int(base) * effect.points * factor // (effect.per * 100)


def _standing(run: _Run, effect: Multiplier) -> str | None:
    """The member's tier or plan id, for a multiplier `by` it."""
    return cast(str | None, run.ctx["tier.name" if effect.by == "tier" else "member.plan"])


def _percent(run: _Run, effect: Multiplier) -> int:
    """The multiplier's percent: its own, or that of the member's tier or plan (100 if none).
    Rounding: each target's extra, base * (percent - 100) // 100, is rounded down."""
    if effect.percent is not None:
        return effect.percent
    assert effect.by is not None
    return run.program.percents[effect.by].get(_standing(run, effect) or "", 100)


def _restricted(run: _Run, target: CompiledRule, chosen: Sequence[int]) -> int:
    """What `target` would give on the `chosen` lines alone (before limits)."""
    basket = run.basket
    if basket is None or not chosen:
        return 0
    subset: Iterable[int] = chosen
    if target.line_filter is not None:
        theirs = basket.chosen_set(target)
        subset = [p for p in chosen if p in theirs]
    effect = target.rule.effect
    if effect.kind == "per_amount":
        return points_for_amount(basket.totals(subset)[0], effect)
    if effect.kind == "per_unit":
        return effect.points * basket.totals(subset)[1]
    return 0


def _limit(run: _Run, compiled: CompiledRule, raw: int) -> tuple[int, str]:
    value, note = raw, ""
    limits = compiled.rule.limits
    if limits.per_activity is not None and value > limits.per_activity:
        value, note = limits.per_activity, "capped per activity"
    if not run.counting:
        return value, note
    for limit, prefix in compiled.limit_keys:
        points, times = run.count(prefix + run.buckets[limit.period])
        if limit.times is not None and times >= limit.times:
            return 0, f"already {times} time(s) this {limit.period.value}"
        if limit.points is not None and value > limit.points - points:
            value, note = max(0, limit.points - points), f"capped per {limit.period.value}"
    if limits.budget is not None:
        used = run.shared.get(compiled.budget_key, 0)
        if value > limits.budget - used:
            value, note = max(0, limits.budget - used), "rule budget reached"
    return value, note


def _times_used_up(compiled: CompiledRule, run: _Run) -> bool:
    """Whether a `times` limit of the rule is reached for this period."""
    for limit, prefix in compiled.limit_keys:
        _, times = run.count(prefix + run.buckets[limit.period])
        if limit.times is not None and times >= limit.times:
            return True
    return False


def _count(run: _Run, compiled: CompiledRule, value: int) -> None:
    result = run.result
    for limit, prefix in compiled.limit_keys:
        key = prefix + run.buckets[limit.period]
        points, times = run.count(key)
        run.changed[key] = (points + value, times + 1)
        result.counters.append(CounterDelta(key, value, 1))
    if compiled.rule.limits.budget is not None:
        result.counters.append(CounterDelta(compiled.budget_key, value, 1, member=False))


def _stamp(run: _Run, rule: Rule, effect: Stamp, units: int, dry: bool) -> tuple[int, str]:
    stamps = units if effect.per == "unit" else 1
    if stamps <= 0:
        return 0, ""
    card = run.program.cards[effect.card]
    key = stamp_key(card.id)
    have, times = run.count(key)
    filled, left = divmod(have + stamps, card.stamps)
    if dry:
        return filled * card.reward_points, ""
    run.changed[key] = (left, times)
    result = run.result
    result.counters.append(CounterDelta(key, left - have, 0))
    note = f"{stamps} stamp(s) on {card.id}: {left}/{card.stamps}"
    if filled and card.reward is not None:
        result.rewards.extend([RewardGrant(card.reward, f"{rule.id}:{card.id}")] * filled)
        return 0, note + f", {filled} card(s) completed: {card.reward}"
    if filled:
        reward = filled * card.reward_points
        vests_at, expires_at = _dates(run.program, rule, run.facts) if run.dates else (None, None)
        result.points.append(PointsEffect(reward, f"{rule.id}:{card.id}", vests_at, expires_at))
        return reward, note + f", {filled} card(s) completed"
    return 0, note


#: The start of the note `_stamp` writes: "<n> stamp(s) on <card>: <left>/<size>", then
#: ", <k> card(s) completed" when it completes cards.
_STAMP_NOTE = re.compile(
    r"(\d+) stamp\(s\) on ([a-z0-9_-]+): \d+/\d+(?:, (\d+) card\(s\) completed)?"
)


def stamps_noted(note: str) -> tuple[str, int, int] | None:
    """(card, stamps put on it, cards completed) from a stamp rule's note; None for any other
    note. What a purchase did to its cards, read back from its stored answer (returns)."""
    found = _STAMP_NOTE.match(note)
    if found is None:
        return None
    return found[2], int(found[1]), int(found[3] or 0)


def _dates(
    program: CompiledProgram, rule: Rule, facts: ActivityFacts
) -> tuple[datetime | None, datetime | None]:
    return lot_dates(
        program.spec, facts.occurred_at, vesting_days=rule.vesting_days, expiry=rule.expiry
    )
