"""Members by tier in a what-if replay: the proposed program's tiers, and the real ones.

Simulated (`TierReplay`): the live tier rules of `trofast.tiers.service`, replayed in memory
member by member, on the replayed history:

- the metrics are counted over the qualification window of each activity's `occurred_at`
  (calendar year, anniversary year or the last N months, program time zone, the windows of
  `tiers.service.window`): spend (purchases minus returns), purchases, `store_visit` events,
  `flight_event` events from the stored activities; points from the *simulated* points of
  the proposed version (a return's take-back counted when the return happened);
- after each activity a member moves up at once to the highest tier the window's metrics
  reach (the activity itself earns at the old tier), and the tier is secured through the
  next period; reaching one's own tier again extends it;
- when a secured period ends (at that instant, as a worker that never lags) the member is
  reviewed on that period's metrics: kept, or after `grace_days` moved down one tier or to
  the recalculated one (`downgrade`); requalifying during the grace cancels it;
- the member's tier at a month end is the state just before the next month starts.

Not replayed: manual tiers (an admin's act, not the program's), welcome points (they are
not activity points, so they are in neither "issued" column). The replay starts from the
entry tier at the beginning of the window before the one holding `--from` (history before
that is taken as never qualified).

Actual (`actual_counts`): each member's last `tier_history` row before the month end, or
the entry tier for members without one.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from trofast.programs.spec import ProgramSpec
from trofast.tiers.document import Combine, Downgrade, Metric, PointsSource, Window
from trofast.tiers.service import following, window

#: Position of each metric in a member's sums.
_SLOT = {
    Metric.spend: 0, Metric.purchases: 1, Metric.visits: 2, Metric.flights: 3, Metric.points: 4,
}  # fmt: skip
_JUST_BEFORE = timedelta(microseconds=1)


def warm_up_start(spec: ProgramSpec, start: datetime) -> datetime:
    """Where the tier replay starts: the start of the qualification window before the one
    holding `start` (for anniversary years, 24 months back covers every member's)."""
    q, zone = spec.tier_qualification, spec.zone
    local = start.astimezone(zone)
    if q.window is Window.calendar_year:
        day = local.date().replace(year=local.year - 1, month=1, day=1)
        return datetime(day.year, 1, 1, tzinfo=zone)
    months = 24 if q.window is Window.anniversary_year else 2 * (q.rolling_months or 12)
    index = local.year * 12 + local.month - 1 - months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=zone)


class _Member:
    """One member's replayed tier state, as the `member_tiers` row would hold it, plus the
    activities of the windows still needed (time, spend, purchases, visits, flights, points)."""

    __slots__ = (
        "enrolled_at", "entries", "grace_until", "period_start", "qualified_until", "secured",
        "sums", "tier", "window_end", "window_start",
    )  # fmt: skip

    def __init__(self, enrolled_at: datetime | None) -> None:
        self.enrolled_at = enrolled_at
        self.entries: deque[tuple[datetime, int, int, int, int, int]] = deque()
        self.sums = [0, 0, 0, 0, 0]
        self.window_start: datetime | None = None
        self.window_end: datetime | None = None
        self.secured: datetime | None = None
        self.tier = 0
        self.period_start: datetime | None = None
        self.qualified_until: datetime | None = None
        self.grace_until: datetime | None = None


class TierReplay:
    """The proposed program's tiers, moved by the replayed activities (see the module)."""

    def __init__(
        self,
        spec: ProgramSpec,
        enrolled: dict[int, datetime | None],
        on_change: Callable[[int, str], None],
    ) -> None:
        q = spec.tier_qualification
        self.q, self.zone = q, spec.zone
        self.ids = [tier.id for tier in spec.tiers]
        self.top = len(spec.tiers) - 1
        self.thresholds = [
            tuple((_SLOT[m], tier.threshold.get(m, 0)) for m in q.metrics) for tier in spec.tiers
        ]
        self.every = q.combine is Combine.all
        self.flight = q.flight_event
        self.purchase_points_only = q.points is PointsSource.purchases
        self.one_step = q.downgrade is Downgrade.one_step
        self.grace = timedelta(days=q.grace_days)
        self.enrolled = enrolled
        self.enrolment_times = sorted(
            at for at in enrolled.values() if at is not None
        )  # for "members enrolled before"
        self.on_change = on_change
        self.members: dict[int, _Member] = {}
        #: members above the entry tier (only they can be reviewed)
        self.raised: set[int] = set()

    # -- per activity -------------------------------------------------------------------------

    def before(self, member_id: int, at: datetime) -> None:
        """Reviews due by `at` (call before the activity earns: it earns at the tier then)."""
        state = self.members.get(member_id)
        if state is None or state.qualified_until is None:
            return
        if (state.qualified_until if state.grace_until is None else state.grace_until) <= at:
            self._review(member_id, state, at)

    def add(
        self,
        member_id: int,
        at: datetime,
        kind: str,
        amount: int | None,
        event_type: str | None,
        points: int,
    ) -> None:
        """Count the activity in the member's window, then move the member up if reached."""
        state = self.members.get(member_id)
        if state is None:
            state = self.members[member_id] = _Member(self.enrolled.get(member_id))
        if state.window_end is None or at >= state.window_end:
            self._new_window(state, at)
        spend = purchases = visits = flights = 0
        if kind == "purchase":
            spend, purchases = amount or 0, 1
        elif kind == "return":
            spend = -(amount or 0)
        else:
            if self.purchase_points_only:
                points = 0
            if event_type == "store_visit":
                visits = 1
            if event_type is not None and event_type == self.flight:
                flights = 1
        state.entries.append((at, spend, purchases, visits, flights, points))
        sums = state.sums
        sums[0] += spend
        sums[1] += purchases
        sums[2] += visits
        sums[3] += flights
        sums[4] += points
        current = state.tier
        if current == self.top and state.grace_until is None:
            qualified = state.qualified_until
            if qualified is not None and state.secured is not None and qualified >= state.secured:
                return  # as on_activity: nothing a top tier's window can secure further
        level = self._reached(sums)
        if level > current:
            state.tier = level
            state.period_start, state.qualified_until = state.window_end, state.secured
            state.grace_until = None
            self.raised.add(member_id)
            self.on_change(member_id, self.ids[level])
        elif level == current > 0 and (
            state.qualified_until is None
            or (state.secured is not None and state.qualified_until < state.secured)
        ):
            state.period_start, state.qualified_until = state.window_end, state.secured
            state.grace_until = None

    def _new_window(self, state: _Member, at: datetime) -> None:
        start, end = window(self.q, self.zone, at, state.enrolled_at)
        state.window_start, state.window_end = start, end
        state.secured = following(self.q, end, self.zone)
        entries, sums = state.entries, state.sums
        while entries and entries[0][0] < start:
            _, *values = entries.popleft()
            for slot, value in enumerate(values):
                sums[slot] -= value

    def _reached(self, sums: Sequence[int]) -> int:
        test = all if self.every else any
        for index in range(self.top, 0, -1):
            if test(sums[slot] >= value for slot, value in self.thresholds[index]):
                return index
        return 0

    def _review(self, member_id: int, state: _Member, now: datetime) -> None:
        """tiers.service._decide at each period end (or grace end) up to `now`."""
        while state.qualified_until is not None:
            ends = state.qualified_until
            at = ends if state.grace_until is None else state.grace_until
            if at > now:
                return
            assert state.period_start is not None
            period_start = state.period_start
            sums = [0, 0, 0, 0, 0]
            for at_, *values in state.entries:
                if period_start <= at_ < ends:
                    for slot, value in enumerate(values):
                        sums[slot] += value
            level, current = self._reached(sums), state.tier
            target = current if level >= current else current - 1 if self.one_step else level
            start, end = period_start, ends
            while end <= at:
                start, end = end, following(self.q, end, self.zone)
            if target != current and self.grace and state.grace_until is None:
                state.grace_until = ends + self.grace
                continue  # reviewed again when the grace is over
            state.grace_until = None
            if target == current:
                state.period_start, state.qualified_until = start, end
                continue
            state.tier = target
            self.on_change(member_id, self.ids[target])
            if target == 0:
                state.period_start = state.qualified_until = None
                self.raised.discard(member_id)
            else:
                state.period_start, state.qualified_until = start, end

    # -- per month ----------------------------------------------------------------------------

    def counts(self, boundary: datetime) -> dict[str, int]:
        """Members by tier id just before `boundary` (members enrolled by then)."""
        moment = boundary - _JUST_BEFORE
        for member_id in list(self.raised):
            state = self.members[member_id]
            if state.qualified_until is not None:
                self._review(member_id, state, moment)
        tally = Counter(self.ids[self.members[m].tier] for m in self.raised)
        enrolled = bisect.bisect_left(self.enrolment_times, boundary)
        out = {tier: tally.get(tier, 0) for tier in reversed(self.ids)}
        out[self.ids[0]] = max(enrolled - sum(tally.values()), 0)
        return out


def actual_counts(
    changes: Iterable[Any],
    entry: str,
    tier_ids: Sequence[str],
    enrolled: Sequence[datetime],
    boundaries: Sequence[datetime],
) -> list[dict[str, int]]:
    """Members by real tier just before each boundary: `changes` are tier_history rows
    (member_id, to_tier, at) oldest first; members without one are in `entry`."""
    enrolment_times = sorted(enrolled)
    tier_of: dict[int, str] = {}
    tally: Counter[str] = Counter()
    pending = iter(changes)
    change = next(pending, None)
    out: list[dict[str, int]] = []
    for boundary in boundaries:
        while change is not None and change.at < boundary:
            member_id = int(change.member_id)
            before = tier_of.get(member_id)
            if before is not None:
                tally[before] -= 1
            tier_of[member_id] = str(change.to_tier)
            tally[str(change.to_tier)] += 1
            change = next(pending, None)
        counts = {tier: tally.get(tier, 0) for tier in reversed(tier_ids) if tier != entry}
        for tier, count in tally.items():  # tiers an older version had
            if tier != entry and tier not in counts and count:
                counts[tier] = count
        raised = sum(counts.values())
        counts[entry] = max(bisect.bisect_left(enrolment_times, boundary) - raised, 0)
        out.append(counts)
    return out


def month_boundaries(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The end of each month (program zone) in [start, end), the last one capped at `end`."""
    out: list[datetime] = []
    local = start.astimezone(zone)
    while True:
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        index = first.year * 12 + first.month
        following_month = first.replace(year=index // 12, month=index % 12 + 1)
        boundary = min(following_month, end.astimezone(zone))
        out.append(boundary)
        if boundary >= end:
            return out
        local = following_month
