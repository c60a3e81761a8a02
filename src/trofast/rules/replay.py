"""The points of an activity, for replays: the rules planned per kind.

A what-if replay (analytics.simulate) needs only the points an activity earns and the
vouchers its rules grant, millions of times. `points()` gives exactly the points of
`engine.evaluate(..., dates=False)` and leaves the counters as `engine.apply_counters()`
leaves them, but each program version is first turned into a plan: per trigger, its rules
as flat steps that say at once what kind of effect they have and what they need (no run
object, no effects, no notes, no generic dispatch), and a basket scan that adds up, in one
pass over the lines, each line-filtered rule's amount, units and lines (and those of each
pair of a filtered multiplier and a filtered target, which a multiplier restricted to its
lines needs). Decision 0009 says why this second way through the rules is worth having.

A best-of group is decided where its first rule runs, as in the engine: each of its rules
is valued without writing anything (`_best_of`), and the best is then applied. The lines
of a rule with a line condition (`lines.when`) are picked one by one when the rule is
reached (`_picked`). tests/rules/test_replay.py holds `points()` to
`engine.evaluate()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

from trofast.rules import engine
from trofast.rules.conditions import Predicate
from trofast.rules.document import Period

# The kinds of step (small ints: compared once per rule per activity).
_PER_AMOUNT, _FIXED, _PER_UNIT, _CASHBACK, _ATTRIBUTE, _MULTIPLIER, _STAMP, _REWARD = range(8)
_KINDS = {
    "per_amount": _PER_AMOUNT,
    "fixed": _FIXED,
    "per_unit": _PER_UNIT,
    "cashback": _CASHBACK,
    "attribute": _ATTRIBUTE,
    "multiplier": _MULTIPLIER,
    "stamp": _STAMP,
    "reward": _REWARD,
}

#: A per-member limit: (counter key without its period bucket, period, points, times).
_Limit = tuple[str, Period, int | None, int | None]
#: Where a rule's lines are: no filter (all lines); chosen one by one by a line condition.
#: (Otherwise, the offset of their sums in the basket scan.)
_ALL, _PICKED = -1, -2


class _Pick(NamedTuple):
    """Lines chosen one by one (a line condition): those that all `lists` let through and
    for which all `when` hold."""

    lists: tuple[engine.LineLists, ...]
    when: tuple[Predicate, ...]


#: A multiplier's target: (rule id, where the lines both rules take are (_ALL: the
#: multiplier's own), their pick if _PICKED, the target's kind, its points, its per_amount).
_Target = tuple[str, int, "_Pick | None", int, int, int]


class _Step(NamedTuple):
    """One rule, flattened for the loop in `points()`."""

    kind: int
    rule_id: str
    #: Offset of the rule's (amount, units, lines) in the basket sums, or _ALL or _PICKED.
    at: int
    pick: _Pick | None
    min_amount: int
    active_from: date | None
    active_until: date | None
    dated: bool  # active_from or active_until
    when: Predicate | None
    stop_after: bool
    #: The effect's numbers: per_amount (points, per_amount); fixed and per_unit (points, 0);
    #: cashback (basis points, 0); a stamp card (stamps, reward points).
    a: int
    b: int
    per_activity: int | None
    limits: tuple[_Limit, ...]
    budget: int | None
    budget_key: str
    #: A best-of group's (id, rules in order), on each of its rules.
    group: tuple[str, tuple[_Step, ...]] | None
    #: The rest of what some kinds need: the attribute effect; a multiplier's (percent or
    #: None, by, targets); a stamp's (counter key, per unit, reward id or None); a reward id.
    more: Any


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_DAY = engine.day_of(_EPOCH.date())


class Plan:
    """A program version's steps per trigger and what its basket scan adds up."""

    def __init__(self, program: engine.CompiledProgram) -> None:
        self.program = program
        #: per line-filtered rule and per (multiplier, filtered target) pair: the lists a
        #: line must pass, and the offset of its sums
        self._passes: list[tuple[tuple[engine.LineLists, ...], int]] = []
        offsets: dict[tuple[engine.LineLists, ...], int] = {}

        def lines_of(*rules: engine.CompiledRule) -> tuple[int, _Pick | None]:
            """Where the lines that all `rules` take are: an offset in the scan's sums, or
            picked one by one where a rule has a line condition."""
            lists = tuple(c.lists for c in rules if c.lists is not None)
            conditions = tuple(c.line_when for c in rules if c.line_when is not None)
            if conditions:
                return _PICKED, _Pick(lists, conditions)
            # Rules with the same lists share their sums (e.g. a base rate and a partner
            # rate that leave out the same categories).
            if lists not in offsets:
                offsets[lists] = 2 + 3 * len(offsets)  # after the basket's amount and units
                self._passes.append((lists, offsets[lists]))
            return offsets[lists], None

        self.steps: dict[str, tuple[_Step, ...]] = {}
        #: triggers with rules whose lines are picked (their context is needed at once)
        self.picking: set[str] = set()
        for trigger, rules in program.by_trigger.items():
            if any(c.line_when is not None for c in rules):
                self.picking.add(trigger)
            steps = {c.index: _step(program, c, lines_of) for c in rules}
            for (on, group), members in program.groups.items():
                if on == trigger:
                    grouped = (group, tuple(steps[c.index] for c in members))
                    for c in members:
                        steps[c.index] = steps[c.index]._replace(group=grouped)
            self.steps[trigger] = tuple(steps[c.index] for c in rules)
        self.width = 2 + 3 * len(offsets)
        self.filtered = bool(offsets)
        self._by_sku: dict[str, tuple[str | None, tuple[str, ...], tuple[int, ...]]] = {}
        #: [start, end) in UTC of the local day last seen, and that day: a replay comes in
        #: time order, many activities to a day, and converting each to local time costs
        #: as much as a rule.
        self.today: tuple[datetime, datetime, engine.LocalDay] = (_EPOCH, _EPOCH, _NO_DAY)

    def day_at(self, at: datetime) -> engine.LocalDay:
        """The local day of the instant `at`, remembered in `today`."""
        zone = self.program.zone
        local = at.astimezone(zone)
        day = local.date()
        start = datetime.combine(day, time(), zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
        found = engine.day_of(day)
        self.today = (start, end, found)
        return found

    def scan(self, lines: tuple[engine.Line, ...]) -> list[int]:
        """[amount, units] of all lines, then (amount, units, lines) per offset."""
        sums = [0] * self.width
        total_amount = total_units = 0
        by_sku = self._by_sku
        for line in lines:
            amount, units = line.amount, line.quantity
            total_amount += amount
            total_units += units
            if not self.filtered:
                continue
            hit = by_sku.get(line.sku)
            if hit is not None and hit[0] == line.category and hit[1] == line.labels:
                offsets = hit[2]
            else:
                offsets = self._offsets(line)
            for at in offsets:
                sums[at] += amount
                sums[at + 1] += units
                sums[at + 2] += 1
        sums[0] = total_amount
        sums[1] = total_units
        return sums

    def _offsets(self, line: engine.Line) -> tuple[int, ...]:
        """The offsets whose lists all let `line` through, remembered by its sku (for the
        category and labels first seen with it)."""
        labels = line.labels if type(line.labels) is tuple else tuple(line.labels)
        found = tuple(
            at
            for lists, at in self._passes
            if all(each.let_through(line.sku, line.category, labels) for each in lists)
        )
        if len(self._by_sku) >= engine.LINE_MEMORY:
            self._by_sku.clear()
        self._by_sku.setdefault(line.sku, (line.category, labels, found))
        return found

    def points(
        self,
        facts: engine.ActivityFacts,
        member: engine.MemberSnapshot,
        member_counters: dict[str, tuple[int, int]],
        program_counters: dict[str, int],
        grants: dict[str, int] | None = None,
    ) -> int:
        """`points()` of this plan's program."""
        if member.status != "active":
            return 0
        program = self.program
        trigger = facts.trigger
        steps = self.steps.get(trigger)
        if not steps:
            return 0
        occurred_at = facts.occurred_at
        start, end, day = self.today
        if not start <= occurred_at < end:
            day = self.day_at(occurred_at)
        lines = facts.lines
        sums = self.scan(lines) if lines else None
        # The context of the conditions, built when the first rule with conditions is reached
        # (at once where lines are picked by their own conditions).
        ctx: Mapping[str, Any] | None = None
        if trigger in self.picking:
            ctx = engine.rule_context(program, facts, member, day)
        counts = member_counters
        buckets = day.buckets
        total = 0
        earned: dict[str, int] = {}
        decided: set[str] = set()
        for step in steps:
            if step.group is not None:  # a best-of group: decided where its first rule runs
                name, candidates = step.group
                if name in decided:
                    continue
                decided.add(name)
                if ctx is None:
                    ctx = engine.rule_context(program, facts, member, day)
                step = _best_of(candidates, program, facts, member, day, ctx, sums, counts,
                                program_counters, earned)  # fmt: skip
            # _taken() inlined: every rule of every activity passes here
            at = step.at
            if at >= 0:
                if sums is None or not sums[at + 2]:
                    continue
                amount, units = sums[at], sums[at + 1]
            elif at == _ALL:
                amount, units = (sums[0], sums[1]) if sums is not None else (facts.amount, 1)
            else:
                assert step.pick is not None and ctx is not None
                amount, units, count = _picked(step.pick, facts.lines, ctx)
                if not count:
                    continue
            if amount < step.min_amount:
                continue
            if step.dated and not _active(step, day.date):
                continue
            when = step.when
            if when is not None:
                if ctx is None:
                    ctx = engine.rule_context(program, facts, member, day)
                if not when(ctx):
                    continue
            kind = step.kind
            if kind == _STAMP:
                if step.limits and _used_up(step, counts, buckets):
                    continue
                key, per_unit, reward = step.more
                stamps = units if per_unit else 1
                if stamps <= 0:
                    continue
                have, times = counts.get(key, (0, 0))
                filled, left = divmod(have + stamps, step.a)
                counts[key] = (left, times)
                value = 0
                if filled and reward is not None:
                    if grants is not None:
                        grants[reward] = grants.get(reward, 0) + filled
                elif filled:
                    value = filled * step.b
                    total += value
                if step.limits or step.budget is not None:
                    _count(step, counts, program_counters, buckets, 0)
                if value > 0 and step.stop_after:
                    break
                continue
            if kind == _REWARD:
                if step.limits and _used_up(step, counts, buckets):
                    continue
                if grants is not None:
                    grants[step.more] = grants.get(step.more, 0) + 1
                _count(step, counts, program_counters, buckets, 0)
                continue
            if kind == _PER_AMOUNT:  # the commonest, without a call
                value = (amount // step.b) * step.a if amount > 0 else 0
            else:
                value = _raw_value(program, step, facts, member, earned, sums, ctx, amount, units)
            if value <= 0:
                continue
            if step.per_activity is not None and value > step.per_activity:
                value = step.per_activity
            if step.limits or step.budget is not None:
                value = _within_limits(step, counts, program_counters, buckets, value)
                if value <= 0:
                    continue
                _count(step, counts, program_counters, buckets, value)
            earned[step.rule_id] = value
            if kind != _CASHBACK:
                total += value
            if step.stop_after:
                break
        return total


def _step(
    program: engine.CompiledProgram,
    compiled: engine.CompiledRule,
    lines_of: Callable[..., tuple[int, _Pick | None]],
) -> _Step:
    rule, effect = compiled.rule, compiled.rule.effect
    kind = _KINDS[effect.kind]
    a = b = 0
    more: Any = None
    if effect.kind == "per_amount":
        a, b = effect.points, effect.per_amount
    elif effect.kind in ("fixed", "per_unit"):
        a = effect.points
    elif effect.kind == "cashback":
        a = effect.basis_points
    elif effect.kind == "attribute":
        more = effect
    elif effect.kind == "multiplier":
        targets: list[_Target] = []
        for target_id in effect.of:
            target = program.by_id[target_id]
            pair, pick = _ALL, None
            if compiled.lists is not None and target.lists is not None:
                pair, pick = lines_of(compiled, target)
            target_effect = target.rule.effect
            points = per = 0
            if target_effect.kind == "per_amount":
                points, per = target_effect.points, target_effect.per_amount
            elif target_effect.kind == "per_unit":
                points = target_effect.points
            targets.append((target_id, pair, pick, _KINDS[target_effect.kind], points, per))
        more = (effect.percent, effect.by, tuple(targets))
    elif effect.kind == "stamp":
        card = program.cards[effect.card]
        a, b = card.stamps, card.reward_points
        more = (engine.stamp_key(card.id), effect.per == "unit", card.reward)
    elif effect.kind == "reward":
        more = effect.reward
    limits = rule.limits
    at, pick = lines_of(compiled) if compiled.lists is not None else (_ALL, None)
    return _Step(
        kind=kind,
        rule_id=rule.id,
        at=at,
        pick=pick,
        min_amount=rule.min_amount,
        active_from=rule.active_from,
        active_until=rule.active_until,
        dated=compiled.dated,
        when=compiled.when,
        stop_after=rule.stop_after,
        a=a,
        b=b,
        per_activity=limits.per_activity,
        limits=tuple(
            (prefix, limit.period, limit.points, limit.times)
            for limit, prefix in compiled.limit_keys
        ),
        budget=limits.budget,
        budget_key=compiled.budget_key,
        group=None,
        more=more,
    )


_plans: dict[int, tuple[engine.CompiledProgram, Plan]] = {}
_plans_lock = threading.Lock()


def plan(program: engine.CompiledProgram) -> Plan:
    """The plan of a compiled program version (made once, then remembered)."""
    hit = _plans.get(id(program))
    if hit is not None and hit[0] is program:
        return hit[1]
    made = Plan(program)
    with _plans_lock:
        _plans[id(program)] = (program, made)
    return made


def points(
    program: engine.CompiledProgram,
    facts: engine.ActivityFacts,
    member: engine.MemberSnapshot,
    member_counters: dict[str, tuple[int, int]],
    program_counters: dict[str, int],
    grants: dict[str, int] | None = None,
) -> int:
    """The points `facts` earn `member` (those of `engine.evaluate(..., dates=False)`),
    with `member_counters` and `program_counters` updated in place as `apply_counters()`
    would update them, and the vouchers the evaluation's `rewards` would hold counted in
    `grants`, per reward id. (A replay keeps `plan(program)` and calls its `points`.)"""
    return plan(program).points(facts, member, member_counters, program_counters, grants)


def _taken(
    step: _Step,
    facts: engine.ActivityFacts,
    sums: list[int] | None,
    today: date,
    ctx: Mapping[str, Any] | None,
) -> tuple[int, int] | None:
    """(amount, units) of the lines the rule takes, or None when it gives nothing anyway:
    a filtered rule that takes no line, an amount below its minimum, a day it is not active."""
    at = step.at
    if at >= 0:
        if sums is None or not sums[at + 2]:
            return None
        amount, units = sums[at], sums[at + 1]
    elif at == _ALL:
        amount, units = (sums[0], sums[1]) if sums is not None else (facts.amount, 1)
    else:
        assert step.pick is not None and ctx is not None
        amount, units, count = _picked(step.pick, facts.lines, ctx)
        if not count:
            return None
    if amount < step.min_amount or (step.dated and not _active(step, today)):
        return None
    return amount, units


def _picked(
    pick: _Pick, lines: tuple[engine.Line, ...], ctx: Mapping[str, Any]
) -> tuple[int, int, int]:
    """(amount, units, lines) of the lines `pick` chooses; a line condition reads the
    activity's context and the line's own fields."""
    amount = units = count = 0
    for line in lines:
        if not all(each.let_through(line.sku, line.category, line.labels) for each in pick.lists):
            continue
        line_ctx = {**ctx, **engine.line_context(line)}
        if all(when(line_ctx) for when in pick.when):
            amount += line.amount
            units += line.quantity
            count += 1
    return amount, units, count


def _active(step: _Step, today: date) -> bool:
    """Whether the rule is active on the local date `today`."""
    if step.active_from is not None and today < step.active_from:
        return False
    return step.active_until is None or today <= step.active_until


def _raw_value(
    program: engine.CompiledProgram,
    step: _Step,
    facts: engine.ActivityFacts,
    member: engine.MemberSnapshot,
    earned: Mapping[str, int],
    sums: list[int] | None,
    ctx: Mapping[str, Any] | None,
    amount: int,
    units: int,
) -> int:
    """What a rule that gives points or cashback gives, before its limits."""
    kind = step.kind
    if kind == _PER_AMOUNT:
        return (amount // step.b) * step.a if amount > 0 else 0
    if kind == _FIXED:
        return step.a
    if kind == _PER_UNIT:
        return step.a * units
    if kind == _CASHBACK:
        return amount * step.a // 10_000
    if kind == _ATTRIBUTE:
        return engine.attribute_points(step.more, facts.attributes)
    return _multiplied(program, step, facts, member, earned, sums, ctx, amount, units)


def _best_of(
    candidates: tuple[_Step, ...],
    program: engine.CompiledProgram,
    facts: engine.ActivityFacts,
    member: engine.MemberSnapshot,
    day: engine.LocalDay,
    ctx: Mapping[str, Any],
    sums: list[int] | None,
    counts: Mapping[str, tuple[int, int]],
    program_counters: Mapping[str, int],
    earned: Mapping[str, int],
) -> _Step:
    """The rule of a best-of group that would give the most now (the first on a tie)."""
    best, best_value = candidates[0], -1
    for step in candidates:
        value = 0
        taken = _taken(step, facts, sums, day.date, ctx)
        if taken is not None and (step.when is None or step.when(ctx)):
            amount, units = taken
            if step.kind == _STAMP:  # what the cards it would complete give
                key, per_unit, _ = step.more
                stamps = units if per_unit else 1
                if stamps > 0 and not (step.limits and _used_up(step, counts, day.buckets)):
                    value = (counts.get(key, (0, 0))[0] + stamps) // step.a * step.b
            elif step.kind != _REWARD:  # (a reward gives no points)
                value = _raw_value(program, step, facts, member, earned, sums, ctx, amount, units)
                if value > 0 and step.per_activity is not None:
                    value = min(value, step.per_activity)
                if value > 0 and (step.limits or step.budget is not None):
                    value = _within_limits(step, counts, program_counters, day.buckets, value)
        if value > best_value:
            best, best_value = step, value
    return best


def _multiplied(
    program: engine.CompiledProgram,
    step: _Step,
    facts: engine.ActivityFacts,
    member: engine.MemberSnapshot,
    earned: Mapping[str, int],
    sums: list[int] | None,
    ctx: Mapping[str, Any] | None,
    amount: int,
    units: int,
) -> int:
    """A multiplier's extra points: each target's (on the multiplier's lines, if it has a
    filter) times (percent - 100) / 100, rounded down per target."""
    percent, by, targets = step.more
    if percent is None:
        standing = member.tier if by == "tier" else member.plan
        percent = program.percents[by].get(standing or "", 100)
    extra = 0
    for target_id, pair, pick, kind, points, per in targets:
        base = earned.get(target_id, 0)
        if base <= 0:
            continue
        if step.at != _ALL:  # restricted to the lines both rules take
            if pair >= 0:
                assert sums is not None
                both_amount, both_units = sums[pair], sums[pair + 1]
            elif pick is not None:
                assert ctx is not None
                both_amount, both_units, _ = _picked(pick, facts.lines, ctx)
            else:
                both_amount, both_units = amount, units
            if kind == _PER_AMOUNT:
                base = min(base, (both_amount // per) * points if both_amount > 0 else 0)
            elif kind == _PER_UNIT:
                base = min(base, points * both_units)
            else:
                base = 0
        extra += base * (percent - 100) // 100
    return extra


def _used_up(
    step: _Step, counts: Mapping[str, tuple[int, int]], buckets: Mapping[Period, str]
) -> bool:
    """Whether a `times` limit of the rule is reached for this period."""
    for prefix, period, _, times in step.limits:
        if times is not None and counts.get(prefix + buckets[period], (0, 0))[1] >= times:
            return True
    return False


def _within_limits(
    step: _Step,
    counts: Mapping[str, tuple[int, int]],
    program_counters: Mapping[str, int],
    buckets: Mapping[Period, str],
    value: int,
) -> int:
    """`value` cut to what the member's limits and the rule's budget leave (0: none)."""
    for prefix, period, points, times in step.limits:
        have, had = counts.get(prefix + buckets[period], (0, 0))
        if times is not None and had >= times:
            return 0
        if points is not None and value > points - have:
            value = max(0, points - have)
    if step.budget is not None:
        used = program_counters.get(step.budget_key, 0)
        if value > step.budget - used:
            value = max(0, step.budget - used)
    return value


def _count(
    step: _Step,
    counts: dict[str, tuple[int, int]],
    program_counters: dict[str, int],
    buckets: Mapping[Period, str],
    value: int,
) -> None:
    """Add `value` points and one time to the rule's counters (as `engine._count`)."""
    for prefix, period, _, _ in step.limits:
        key = prefix + buckets[period]
        have, times = counts.get(key, (0, 0))
        counts[key] = (have + value, times + 1)
    if step.budget is not None:
        program_counters[step.budget_key] = program_counters.get(step.budget_key, 0) + value
