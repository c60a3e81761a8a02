"""What a return undoes of its purchase besides points and cashback: the stamps its lines
gave (and the cards they completed), what the purchase used of per-member limits and rule
budgets, and the vouchers its rules granted.

All of it is read back from the purchase's stored answer (points and cashback per rule, the
stamp rules' notes, the granted vouchers' references) and priced under the version the
purchase was earned under, against `kept`: what the rest of the purchase earns there
(counters ignored). Each return stores what it undid (`undone` in its stored answer), so the
next return of the same purchase undoes only what is left, and a replayed return, answered
from that store, undoes nothing twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from trofast.activities import repository
from trofast.activities.schemas import EffectOut
from trofast.kit.orm import AnyRow
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec
from trofast.rewards import service as rewards
from trofast.rules import engine
from trofast.rules.document import Stamp

#: The key of a return's stored answer that holds what it undid.
UNDONE = "undone"


@dataclass
class Undone:
    """What one return undid: `kept_points`, the points the rest of the purchase keeps (its
    stamp-card rewards as they stand after this return); the answer's extra effects (vouchers
    taken back) and notes; and `record`, stored with the return."""

    kept_points: int
    effects: list[EffectOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Record:
    """What returns undid of one purchase: per rule, the points given back to its limits and
    budget and the stamps taken off; per card, the completions taken back; the references of
    the granted vouchers dealt with (cancelled, or left because they cannot be)."""

    limits: Counter[str] = field(default_factory=Counter)
    stamps: Counter[str] = field(default_factory=Counter)
    cards: Counter[str] = field(default_factory=Counter)
    vouchers: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, stored: Iterable[dict[str, Any]]) -> _Record:
        total = cls()
        for record in stored:
            total.limits.update(record.get("limits", {}))
            total.stamps.update(record.get("stamps", {}))
            total.cards.update(record.get("cards", {}))
            total.vouchers += record.get("vouchers", [])
        return total

    def stored(self) -> dict[str, Any]:
        return {
            "limits": dict(self.limits),
            "stamps": dict(self.stamps),
            "cards": dict(self.cards),
            "vouchers": self.vouchers,
        }


@dataclass(frozen=True)
class _Grant:
    reference: str
    rule: str
    reward: str


@dataclass
class _Earned:
    """What an evaluation gave, per rule: points and cashback (both count against limits),
    stamps (rule -> (card, stamps)), cards completed and their points per card, grants."""

    values: Counter[str] = field(default_factory=Counter)
    stamps: dict[str, tuple[str, int]] = field(default_factory=dict)
    completed: Counter[str] = field(default_factory=Counter)
    card_points: Counter[str] = field(default_factory=Counter)
    grants: list[_Grant] = field(default_factory=list)


def undo(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    actor: str,
    spec: ProgramSpec,
    original: AnyRow,
    earlier: list[AnyRow],
    kept: engine.Evaluation,
    member_id: int,
) -> Undone:
    """Undo what the returned part of `original` did beyond points and cashback, for the
    member (whose account the caller has locked); see the module's docstring."""
    run = _Undoing(conn, program, now, actor, spec, original, earlier, kept, member_id)
    run.give_back_limits()
    run.take_back_grants()
    run.take_back_stamps()
    run.write_counters()
    run.done.record = run.now_done.stored()
    return run.done


class _Undoing:
    """One return's undoing under way: what the purchase did, what its rest keeps, what
    earlier returns undid, and the counter changes gathered to be written at the end."""

    def __init__(
        self,
        conn: Connection,
        program: ProgramVersion,
        now: datetime,
        actor: str,
        spec: ProgramSpec,
        original: AnyRow,
        earlier: list[AnyRow],
        kept: engine.Evaluation,
        member_id: int,
    ) -> None:
        self.conn, self.program, self.now, self.actor = conn, program, now, actor
        self.member_id = member_id
        self.compiled = engine.compile_program(spec)
        self.card_of = {
            f"{c.rule.id}:{c.rule.effect.card}": c.rule.effect.card
            for c in self.compiled.by_id.values()
            if isinstance(c.rule.effect, Stamp)
        }
        self.kept = kept
        self.bought = _stored_outcome(original, self.card_of)
        self.rest = _kept_outcome(kept, self.card_of)
        self.before = _Record.of(r.result.get(UNDONE, {}) for r in earlier)
        self.now_done = _Record()
        self.done = Undone(kept_points=kept.total_points - self.rest.card_points.total())
        self.day = original.occurred_at.astimezone(spec.zone).date()
        self.points_back: Counter[str] = Counter()  # member limit key -> points
        self.times_back: Counter[str] = Counter()  # member limit key -> times
        self.budget_back: Counter[str] = Counter()  # budget key -> points
        self.stamp_changes: dict[str, int] = {}  # stamp key -> stamps (negative: off)
        rules = {*self.bought.values, *self.bought.stamps, *(g.rule for g in self.bought.grants)}
        member_keys = {engine.stamp_key(card) for card, _ in self.bought.stamps.values()}
        budget_keys = set()
        for rule_id in rules & set(self.compiled.by_id):
            limits = self.compiled.by_id[rule_id].rule.limits
            member_keys |= {engine.limit_key(rule_id, lim, self.day) for lim in limits.per_member}
            if limits.budget is not None:
                budget_keys.add(engine.budget_key(rule_id))
        self.counters, self.budgets = repository.load_counters(
            conn, program.program_id, member_id, member_keys, budget_keys, now
        )

    def give_back(self, rule_id: str, points: int, times: int) -> None:
        """Give `points` and `times` back to the rule's limits in the purchase's periods, and
        the points to its budget."""
        if rule_id not in self.compiled.by_id:
            return
        limits = self.compiled.by_id[rule_id].rule.limits
        for limit in limits.per_member:
            key = engine.limit_key(rule_id, limit, self.day)
            self.points_back[key] += points
            self.times_back[key] += times
        if limits.budget is not None and points:
            self.budget_back[engine.budget_key(rule_id)] += points

    def give_back_limits(self) -> None:
        """Each rule's points (or cashback) that the rest no longer earns go back to its
        limits and budget; its time, once the rest earns nothing of it."""
        for rule_id, earned in self.bought.values.items():
            compiled = self.compiled.by_id.get(rule_id)
            if compiled is None or not compiled.counted:
                continue
            owed = min(earned, max(0, earned - self.rest.values[rule_id]))
            given = owed - self.before.limits[rule_id]
            if given > 0:
                self.now_done.limits[rule_id] = given
                self.give_back(rule_id, given, int(owed == earned))

    def take_back_grants(self) -> None:
        """The vouchers of `reward` rules that the rest no longer grants, the latest first."""
        by_rule: dict[str, list[_Grant]] = {}
        for grant in self.bought.grants:
            if grant.rule not in self.card_of:
                by_rule.setdefault(grant.rule, []).append(grant)
        for rule_id, grants in by_rule.items():
            owed = max(0, len(grants) - sum(1 for g in self.kept.rewards if g.rule == rule_id))
            dealt = sum(1 for g in grants if g.reference in self.before.vouchers)
            if owed > dealt:
                self.give_back(rule_id, 0, self.take_back_vouchers(grants, owed - dealt))

    def take_back_stamps(self) -> None:
        """Take off the stamps the returned lines gave; where the card has fewer, take back
        cards the purchase completed (their reward) and put the stamps left on the card."""
        taken: Counter[str] = Counter()  # card -> stamps
        for rule_id, (card, stamps) in self.bought.stamps.items():
            kept_stamps = self.rest.stamps.get(rule_id, (card, 0))[1]
            owed = min(stamps, max(0, stamps - kept_stamps))
            more = owed - self.before.stamps[rule_id]
            if more > 0:
                self.now_done.stamps[rule_id] = more
                taken[card] += more
                self.give_back(rule_id, 0, int(owed == stamps))
        for card_id, stamps in taken.items():
            self.take_off(card_id, stamps)
        for card_id, points in self.bought.card_points.items():
            uncompleted = self.before.cards[card_id] + self.now_done.cards[card_id]
            reward = self.compiled.cards[card_id].reward_points
            self.done.kept_points += max(0, points - uncompleted * reward)

    def take_off(self, card_id: str, stamps: int) -> None:
        """Take `stamps` off the card; what it lacks, cards the purchase completed give back
        (as many as needed and can be taken back); never below zero."""
        card = self.compiled.cards[card_id]
        key = engine.stamp_key(card_id)
        have = self.counters.get(key, (0, 0))[0]
        uncompleted = 0
        if stamps > have:
            needed = -(-(stamps - have) // card.stamps)
            if card.reward is None:
                left = self.bought.completed[card_id] - self.before.cards[card_id]
                uncompleted = min(needed, left)
            else:
                theirs = [g for g in self.bought.grants if self.card_of.get(g.rule) == card_id]
                uncompleted = self.take_back_vouchers(theirs, needed)
        now_on = max(0, have - stamps + uncompleted * card.stamps)
        self.stamp_changes[key] = now_on - have
        note = f"{card_id}: {stamps} stamp(s) taken back: {now_on}/{card.stamps}"
        if uncompleted:
            self.now_done.cards[card_id] = uncompleted
            note += f", {uncompleted} card(s) taken back"
        self.done.notes.append(note)

    def take_back_vouchers(self, grants: list[_Grant], wanted: int) -> int:
        """Take back up to `wanted` of `grants` not dealt with before, the latest first: an
        unused voucher is cancelled, a used (expired, handed-out) one stays with a note. How
        many were taken back (a grant that issued no voucher counts as taken back)."""
        taken = 0
        for grant in reversed(grants):
            if taken == wanted:
                break
            if grant.reference in self.before.vouchers:
                continue
            self.now_done.vouchers.append(grant.reference)
            code, reason = rewards.take_back_grant(
                self.conn, self.program, grant.reference, self.now, self.actor
            )
            if reason is not None:
                self.done.notes.append(
                    f"{grant.rule}: {grant.reward} voucher {code} kept ({reason})"
                )
                continue
            taken += 1
            if code is not None:
                self.done.effects.append(
                    EffectOut(rule="return", reward=grant.reward, voucher=code)
                )
        return taken

    def write_counters(self) -> None:
        """Write the gathered changes, never taking a counter below zero."""
        member = self.member_id
        changes = [
            (
                member,
                key,
                -min(points, self.counters.get(key, (0, 0))[0]),
                -min(self.times_back[key], self.counters.get(key, (0, 0))[1]),
            )
            for key, points in self.points_back.items()
        ]
        changes += [(member, key, delta, 0) for key, delta in self.stamp_changes.items()]
        changes += [
            (0, key, -min(points, self.budgets.get(key, 0)), 0)
            for key, points in self.budget_back.items()
        ]
        changed = [change for change in changes if change[2] or change[3]]
        repository.add_to_counters(self.conn, self.program.program_id, changed, self.now)


def _stored_outcome(original: AnyRow, card_of: dict[str, str]) -> _Earned:
    """What the purchase earned, from its stored answer."""
    outcome = _Earned()
    granted = 0
    for effect in original.result.get("effects", []):
        rule = str(effect["rule"])
        if effect.get("reward") is not None:
            reference = f"activity:{original.id}:{rule}:{granted}"
            outcome.grants.append(_Grant(reference, rule, str(effect["reward"])))
            granted += 1
        elif rule in card_of:
            outcome.card_points[card_of[rule]] += int(effect.get("points", 0))
        else:
            outcome.values[rule] += int(effect.get("points", 0)) + int(effect.get("cashback", 0))
    for note in original.result.get("notes", []):
        rule, _, text = str(note).partition(": ")
        _add_stamps(outcome, rule, text)
    return outcome


def _kept_outcome(kept: engine.Evaluation, card_of: dict[str, str]) -> _Earned:
    """What the rest of the purchase earns (stamp cards priced from no stamps)."""
    outcome = _Earned()
    for effect in kept.points:
        if effect.rule in card_of:
            outcome.card_points[card_of[effect.rule]] += effect.points
        else:
            outcome.values[effect.rule] += effect.points
    for cash in kept.cashback:
        outcome.values[cash.rule] += cash.amount
    for result in kept.outcomes:
        _add_stamps(outcome, result.rule, result.note)
    return outcome


def _add_stamps(outcome: _Earned, rule: str, note: str) -> None:
    noted = engine.stamps_noted(note)
    if noted is not None:
        card, stamps, completed = noted
        outcome.stamps[rule] = (card, stamps)
        outcome.completed[card] += completed
