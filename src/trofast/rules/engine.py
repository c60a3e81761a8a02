"""Evaluate a program version against an activity. Pure: no database, no I/O (rule 6).

(program version, activity, member snapshot, counters) -> effects. A program is compiled
once per version (conditions become functions, rules are sorted by (priority, id)); the
evaluation of one activity then builds one flat context and walks its rules in order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from trofast.ledger.allocation import expiry_after_months, expiry_end_of_year, vesting_time
from trofast.programs.spec import ProgramSpec
from trofast.rules import conditions
from trofast.rules.document import (
    Cashback,
    EarnRate,
    Expiry,
    ExpiryAfterMonths,
    ExpiryEndOfYear,
    Fixed,
    FromAttribute,
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


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    amount: int
    category: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActivityFacts:
    """What the rules may read about an activity."""

    type: str
    occurred_at: datetime
    amount: int = 0
    currency: str | None = None
    store: str | None = None
    channel: str | None = None
    lines: tuple[Line, ...] = ()
    event_type: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

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


@dataclass(frozen=True)
class Counters:
    """The past that limits and stamp cards depend on, by counter key.

    `member`: (points, times) per `rule:period:key` for this member, and stamps per
    `stamps:card`; `program`: points a rule has issued in total (`rule:budget`).
    """

    member: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    program: Mapping[str, int] = field(default_factory=dict)


NO_COUNTERS = Counters()


@dataclass(frozen=True)
class PointsEffect:
    """Credit `points` to the member, as one lot, attributed to `rule`."""

    points: int
    rule: str
    vests_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class CashbackEffect:
    """Credit `amount` minor units to the member's money wallet."""

    amount: int
    rule: str


@dataclass(frozen=True)
class CounterDelta:
    """Add `points` and `times` to a counter (`member` False: program-wide)."""

    key: str
    points: int
    times: int
    member: bool = True


@dataclass(frozen=True)
class RuleOutcome:
    """Why a rule gave what it gave (dry runs and simulations show these)."""

    rule: str
    value: int
    note: str = ""


@dataclass
class Evaluation:
    points: list[PointsEffect] = field(default_factory=list)
    cashback: list[CashbackEffect] = field(default_factory=list)
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


_LineCtx = tuple[Line, dict[str, Any]]


@dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    when: conditions.Predicate | None
    line_when: conditions.Predicate | None
    line_filter: LineFilter | None

    def qualifying(self, lines: list[_LineCtx]) -> list[_LineCtx]:
        wanted = self.line_filter
        if wanted is None:
            return lines
        chosen = []
        for pair in lines:
            line, ctx = pair
            if line.sku in wanted.exclude_skus or line.category in wanted.exclude_categories:
                continue
            included = not (wanted.skus or wanted.categories or wanted.labels) or (
                line.sku in wanted.skus
                or line.category in wanted.categories
                or any(label in wanted.labels for label in line.labels)
            )
            if included and (self.line_when is None or self.line_when(ctx)):
                chosen.append(pair)
        return chosen


@dataclass(frozen=True)
class CompiledProgram:
    """A program version ready to evaluate: rules per trigger in (priority, id) order."""

    spec: ProgramSpec
    by_trigger: Mapping[str, tuple[_CompiledRule, ...]]
    by_id: Mapping[str, _CompiledRule]
    cards: Mapping[str, StampCard]
    stateful_triggers: frozenset[str]
    fields: frozenset[str]
    line_conditions: bool

    def needs(self, prefix: str) -> bool:
        """Whether any condition reads a field starting with `prefix`."""
        return any(f.startswith(prefix) for f in self.fields)


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
                )
            ]
    compiled_rules = [
        _CompiledRule(
            rule=rule,
            when=conditions.compile_all(rule.when),
            line_when=conditions.compile_all(rule.lines.when) if rule.lines else None,
            line_filter=rule.lines,
        )
        for rule in sorted(rules, key=lambda r: (r.priority, r.id))
    ]
    by_trigger: dict[str, list[_CompiledRule]] = {}
    for compiled_rule in compiled_rules:
        by_trigger.setdefault(compiled_rule.rule.on, []).append(compiled_rule)
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
        fields=frozenset(
            clause.field
            for rule in rules
            for clause in [*rule.when, *(rule.lines.when if rule.lines else [])]
        ),
        line_conditions=any(c.line_when is not None for c in compiled_rules),
    )
    with _compile_lock:
        _compiled[id(spec)] = (spec, program)
    return program


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
    day = facts.occurred_at.astimezone(program.spec.zone).date()
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


def activity_context(
    spec: ProgramSpec,
    facts: ActivityFacts,
    member: MemberSnapshot,
    program: CompiledProgram | None = None,
) -> dict[str, Any]:
    """The flat, read-only context conditions see; with `program`, only the parts its
    conditions read are computed."""
    local = facts.occurred_at.astimezone(spec.zone)
    ctx: dict[str, Any] = {
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
    }
    if program is None or program.needs("now."):
        ctx.update(_time_context(local))
    if program is None or program.needs("activity.attributes."):
        for name, value in facts.attributes.items():
            ctx[f"activity.attributes.{name}"] = value
    if program is None or program.needs("member."):
        ctx.update(_member_context(spec, member, local.date()))
    return ctx


def _time_context(local: datetime) -> dict[str, Any]:
    today = local.date()
    return {
        "now.date": today.isoformat(),
        "now.year": local.year,
        "now.month": local.month,
        "now.day": local.day,
        "now.weekday": local.isoweekday(),
        "now.hour": local.hour,
        "now.minute": local.minute,
    }


def _member_context(spec: ProgramSpec, member: MemberSnapshot, today: date) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if member.birth_date is not None:
        born = member.birth_date
        ctx["member.age"] = (
            today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        )
        ctx["member.birthday_today"] = _birthday_in(born, today.year) == today
        # An ISO week may span New Year: look at the birthdays on either side of it too.
        week = today.isocalendar()[:2]
        ctx["member.birthday_week"] = any(
            _birthday_in(born, year).isocalendar()[:2] == week
            for year in (today.year - 1, today.year, today.year + 1)
        )
    if member.enrolled_at is not None:
        ctx["member.days_enrolled"] = (today - member.enrolled_at.astimezone(spec.zone).date()).days
    return ctx


def _birthday_in(born: date, year: int) -> date:
    try:
        return born.replace(year=year)
    except ValueError:  # 29 February in a common year: the 28th
        return date(year, 2, 28)


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
    rules = program.by_trigger.get(facts.trigger, ())
    if not rules:
        return result
    ctx = activity_context(spec, facts, member, program)
    if program.line_conditions:
        lines = [(line, {**ctx, **_line_context(line)}) for line in facts.lines]
    else:
        lines = [(line, ctx) for line in facts.lines]
    local_day = facts.occurred_at.astimezone(spec.zone).date()
    earned: dict[str, int] = {}
    done_groups: set[str] = set()
    member_counts = dict(counters.member) if counters is not None else {}
    for compiled in rules:
        rule = compiled.rule
        if rule.group is not None:
            if rule.group in done_groups:
                continue
            done_groups.add(rule.group)
            members = [c for c in rules if c.rule.group == rule.group]
            candidates = [
                (
                    _apply(
                        program,
                        c,
                        facts,
                        ctx,
                        lines,
                        local_day,
                        earned,
                        member_counts,
                        counters,
                        dry=True,
                    ),
                    c,
                )
                for c in members
            ]
            best_value = max(value for (value, _), _ in candidates)
            winner = next(c for (value, _), c in candidates if value == best_value)
            for (value, _note), c in candidates:
                if c is not winner and value > 0:
                    result.outcomes.append(RuleOutcome(c.rule.id, 0, "not the best of its group"))
            compiled = winner
            rule = compiled.rule
        value, note = _apply(
            program,
            compiled,
            facts,
            ctx,
            lines,
            local_day,
            earned,
            member_counts,
            counters,
            dry=False,
            into=result,
            dates=dates,
        )
        if value or note:
            result.outcomes.append(RuleOutcome(rule.id, value, note))
        if value > 0 and rule.stop_after:
            break
    return result


def _line_context(line: Line) -> dict[str, Any]:
    return {
        "line.sku": line.sku,
        "line.category": line.category,
        "line.labels": line.labels,
        "line.quantity": line.quantity,
        "line.amount": line.amount,
    }


def _apply(
    program: CompiledProgram,
    compiled: _CompiledRule,
    facts: ActivityFacts,
    ctx: dict[str, Any],
    lines: list[_LineCtx],
    local_day: date,
    earned: dict[str, int],
    member_counts: dict[str, tuple[int, int]],
    counters: Counters | None,
    *,
    dry: bool,
    into: Evaluation | None = None,
    dates: bool = True,
) -> tuple[int, str]:
    """What one rule gives: (value, note). Unless `dry`, records its effects in `into`."""
    rule = compiled.rule
    if rule.active_from is not None and local_day < rule.active_from:
        return 0, ""
    if rule.active_until is not None and local_day > rule.active_until:
        return 0, ""
    if compiled.when is not None and not compiled.when(ctx):
        return 0, ""
    chosen = compiled.qualifying(lines) if facts.lines else []
    if facts.lines or compiled.line_filter is not None:
        amount = sum(line.amount for line, _ in chosen)
        units = sum(line.quantity for line, _ in chosen)
    else:
        amount, units = facts.amount, 1
    if amount < rule.min_amount:
        return 0, f"below the minimum amount {rule.min_amount}" if rule.min_amount else ""
    effect = rule.effect
    if isinstance(effect, Stamp):
        if counters is not None and _times_used_up(rule, local_day, member_counts):
            return 0, "no more stamps this period"
        value, note = _stamp(program, rule, effect, units, member_counts, dry, into, facts, dates)
        if not dry and into is not None and counters is not None and note:
            _count(rule, 0, local_day, member_counts, into)
        return value, note
    raw = _raw_value(program, compiled, effect, facts, chosen, amount, units, earned)
    if raw <= 0:
        return 0, ""
    value, note = _limit(rule, raw, local_day, member_counts, counters)
    if dry or into is None or value <= 0:
        return value, note
    earned[rule.id] = value
    if isinstance(effect, Cashback):
        into.cashback.append(CashbackEffect(value, rule.id))
    else:
        vests_at, expires_at = _dates(program, rule, facts) if dates else (None, None)
        into.points.append(PointsEffect(value, rule.id, vests_at, expires_at))
    if counters is not None:
        _count(rule, value, local_day, member_counts, into)
    return value, note


def _raw_value(
    program: CompiledProgram,
    compiled: _CompiledRule,
    effect: Any,
    facts: ActivityFacts,
    chosen: list[_LineCtx],
    amount: int,
    units: int,
    earned: dict[str, int],
) -> int:
    if isinstance(effect, PerAmount):
        return points_for_amount(amount, effect)
    if isinstance(effect, Fixed):
        return effect.points
    if isinstance(effect, PerUnit):
        return effect.points * units
    if isinstance(effect, Cashback):
        return amount * effect.basis_points // 10_000
    if isinstance(effect, FromAttribute):
        base = facts.attributes.get(effect.attribute)
        if not isinstance(base, int | float) or isinstance(base, bool) or base <= 0:
            return 0
        factor = effect.default_factor
        if effect.factor_by is not None:
            factor = effect.factors.get(str(facts.attributes.get(effect.factor_by)), factor)
        return int(base) * effect.points * factor // (effect.per * 100)
    if isinstance(effect, Multiplier):
        extra = 0
        for target_id in effect.of:
            if earned.get(target_id, 0) <= 0:
                continue
            target = program.by_id[target_id]
            if compiled.line_filter is None:
                base = earned[target_id]
            else:
                base = min(earned[target_id], _restricted(target, chosen))
            extra += base * (effect.percent - 100) // 100
        return extra
    return 0


def _restricted(target: _CompiledRule, chosen: list[_LineCtx]) -> int:
    """What `target` would give on the `chosen` lines alone (before limits)."""
    subset = target.qualifying(chosen)
    effect = target.rule.effect
    if isinstance(effect, PerAmount):
        return points_for_amount(sum(line.amount for line, _ in subset), effect)
    if isinstance(effect, PerUnit):
        return effect.points * sum(line.quantity for line, _ in subset)
    return 0


def _limit(
    rule: Rule,
    raw: int,
    day: date,
    member_counts: dict[str, tuple[int, int]],
    counters: Counters | None,
) -> tuple[int, str]:
    value, note = raw, ""
    limits = rule.limits
    if limits.per_activity is not None and value > limits.per_activity:
        value, note = limits.per_activity, "capped per activity"
    if counters is None:
        return value, note
    for limit in limits.per_member:
        points, times = member_counts.get(limit_key(rule.id, limit, day), (0, 0))
        if limit.times is not None and times >= limit.times:
            return 0, f"already {times} time(s) this {limit.period.value}"
        if limit.points is not None and value > limit.points - points:
            value, note = max(0, limit.points - points), f"capped per {limit.period.value}"
    if limits.budget is not None:
        used = counters.program.get(budget_key(rule.id), 0)
        if value > limits.budget - used:
            value, note = max(0, limits.budget - used), "rule budget reached"
    return value, note


def _times_used_up(rule: Rule, day: date, member_counts: dict[str, tuple[int, int]]) -> bool:
    """Whether a `times` limit of the rule is reached for this period."""
    for limit in rule.limits.per_member:
        _, times = member_counts.get(limit_key(rule.id, limit, day), (0, 0))
        if limit.times is not None and times >= limit.times:
            return True
    return False


def _count(
    rule: Rule,
    value: int,
    day: date,
    member_counts: dict[str, tuple[int, int]],
    into: Evaluation,
) -> None:
    for limit in rule.limits.per_member:
        key = limit_key(rule.id, limit, day)
        points, times = member_counts.get(key, (0, 0))
        member_counts[key] = (points + value, times + 1)
        into.counters.append(CounterDelta(key, value, 1))
    if rule.limits.budget is not None:
        into.counters.append(CounterDelta(budget_key(rule.id), value, 1, member=False))


def _stamp(
    program: CompiledProgram,
    rule: Rule,
    effect: Stamp,
    units: int,
    member_counts: dict[str, tuple[int, int]],
    dry: bool,
    into: Evaluation | None,
    facts: ActivityFacts,
    dates: bool,
) -> tuple[int, str]:
    stamps = units if effect.per == "unit" else 1
    if stamps <= 0:
        return 0, ""
    card = program.cards[effect.card]
    key = stamp_key(card.id)
    have, times = member_counts.get(key, (0, 0))
    filled, left = divmod(have + stamps, card.stamps)
    if dry or into is None:
        return filled * card.reward_points, ""
    member_counts[key] = (left, times)
    into.counters.append(CounterDelta(key, left - have, 0))
    note = f"{stamps} stamp(s) on {card.id}: {left}/{card.stamps}"
    if filled:
        vests_at, expires_at = _dates(program, rule, facts) if dates else (None, None)
        reward = filled * card.reward_points
        into.points.append(PointsEffect(reward, f"{rule.id}:{card.id}", vests_at, expires_at))
        return reward, note + f", {filled} card(s) completed"
    return 0, note


def _dates(
    program: CompiledProgram, rule: Rule, facts: ActivityFacts
) -> tuple[datetime | None, datetime | None]:
    return lot_dates(
        program.spec, facts.occurred_at, vesting_days=rule.vesting_days, expiry=rule.expiry
    )
