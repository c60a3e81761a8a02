"""Property tests for the pure lot maths (no database): allocation, spending order,
vesting and expiry dates, and the one function that turns money into points."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from trofast.kit.errors import InvariantBroken
from trofast.ledger.allocation import (
    LotBalance,
    allocate,
    expiry_after_months,
    expiry_end_of_year,
    sort_for_spending,
    spending_order,
    vesting_time,
)
from trofast.programs.spec import EarnRate, ProgramSpec
from trofast.rules.engine import lot_dates, points_for_amount

STOCKHOLM = ZoneInfo("Europe/Stockholm")
ZONES = [
    "UTC",
    "Europe/Stockholm",
    "America/New_York",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
]

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
expiries = st.none() | instants


@st.composite
def lot_lists(draw: st.DrawFn, max_remaining: int = 1000) -> list[LotBalance]:
    """Lots with distinct ids; remaining may be 0 (a drained lot)."""
    ids = draw(st.lists(st.integers(1, 10_000), unique=True, max_size=12))
    return [LotBalance(i, draw(st.integers(0, max_remaining)), draw(expiries)) for i in ids]


# -- allocate ---------------------------------------------------------------------------------


@given(lot_lists(), st.integers(0, 15_000))
def test_allocate_takes_min_of_amount_and_total(lots: list[LotBalance], amount: int) -> None:
    taken = allocate(lots, amount)
    total = sum(lot.remaining for lot in lots)
    assert sum(t for _, t in taken) == min(amount, total)


@given(lot_lists(), st.integers(0, 15_000))
def test_allocate_takes_are_positive_and_within_each_lot(
    lots: list[LotBalance], amount: int
) -> None:
    by_id = {lot.id: lot for lot in lots}
    taken = allocate(lots, amount)
    assert len({lot_id for lot_id, _ in taken}) == len(taken), "a lot is taken from twice"
    for lot_id, take in taken:
        assert 0 < take <= by_id[lot_id].remaining


@given(lot_lists(), st.integers(0, 15_000))
def test_allocate_drains_earlier_lots_before_touching_later_ones(
    lots: list[LotBalance], amount: int
) -> None:
    taken = dict(allocate(lots, amount))
    position = {lot.id: n for n, lot in enumerate(lots)}
    # Takes come in the order given.
    assert [position[i] for i in taken] == sorted(position[i] for i in taken)
    # Every lot before the last one touched is drained completely.
    if taken:
        last = max(position[i] for i in taken)
        for lot in lots[:last]:
            assert taken.get(lot.id, 0) == lot.remaining
        # Only the last lot touched may keep points; the amount is reached there, or all is taken.
        if sum(taken.values()) < amount:
            assert sum(taken.values()) == sum(lot.remaining for lot in lots)


@given(lot_lists())
def test_allocate_zero_takes_nothing(lots: list[LotBalance]) -> None:
    assert allocate(lots, 0) == []


@given(lot_lists(), st.integers(max_value=-1))
def test_allocate_refuses_negative_amounts(lots: list[LotBalance], amount: int) -> None:
    with pytest.raises(InvariantBroken):
        allocate(lots, amount)


def test_allocate_example() -> None:
    lots = [LotBalance(7, 5, None), LotBalance(3, 0, None), LotBalance(9, 10, None)]
    assert allocate(lots, 12) == [(7, 5), (9, 7)]
    assert allocate(lots, 99) == [(7, 5), (9, 10)]


# -- spending order ---------------------------------------------------------------------------


@given(lot_lists())
def test_spending_order_soonest_expiring_first_never_expiring_last(
    lots: list[LotBalance],
) -> None:
    ordered = sort_for_spending(lots)
    assert sorted(lot.id for lot in ordered) == sorted(lot.id for lot in lots)
    expiring = [lot for lot in ordered if lot.expires_at is not None]
    never = [lot for lot in ordered if lot.expires_at is None]
    assert ordered == expiring + never, "a never-expiring lot comes before an expiring one"
    for a, b in itertools.pairwise(expiring):
        assert a.expires_at is not None and b.expires_at is not None
        assert a.expires_at < b.expires_at or (a.expires_at == b.expires_at and a.id < b.id)
    assert [lot.id for lot in never] == sorted(lot.id for lot in never), "oldest first"


@given(lot_lists(), st.integers(0, 15_000))
def test_spending_in_order_never_takes_a_later_expiring_lot_while_a_sooner_one_has_points(
    lots: list[LotBalance], amount: int
) -> None:
    ordered = sort_for_spending(lots)
    taken = dict(allocate(ordered, amount))
    for lot in ordered:
        if taken.get(lot.id, 0) < lot.remaining:  # this lot still has points left ...
            for later in ordered:
                if spending_order(later) > spending_order(lot):  # ... so later ones are untouched
                    assert later.id not in taken


def test_spending_order_example() -> None:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    lots = [
        LotBalance(1, 5, None),
        LotBalance(2, 5, t + timedelta(days=30)),
        LotBalance(3, 5, t),
        LotBalance(4, 5, t),
        LotBalance(0, 5, None),
    ]
    assert [lot.id for lot in sort_for_spending(lots)] == [3, 4, 2, 0, 1]


# -- vesting ----------------------------------------------------------------------------------


@given(instants, st.integers(0, 365))
def test_vesting_time(earned_at: datetime, days: int) -> None:
    vests = vesting_time(earned_at, days)
    if days == 0:
        assert vests is None
    else:
        assert vests == earned_at + timedelta(days=days)


# -- expiry after months ----------------------------------------------------------------------


@given(instants, st.integers(1, 240))
@example(datetime(2026, 1, 31, 12, tzinfo=UTC), 1)
@example(datetime(2027, 12, 31, 12, tzinfo=UTC), 2)
@example(datetime(2028, 3, 31, 12, tzinfo=UTC), 11)
def test_expiry_after_months_clamps_to_month_end(earned_at: datetime, months: int) -> None:
    expires = expiry_after_months(earned_at, months)
    month_index = earned_at.year * 12 + earned_at.month - 1 + months
    assert (expires.year, expires.month) == (month_index // 12, month_index % 12 + 1)
    last_day = calendar.monthrange(expires.year, expires.month)[1]
    assert expires.day == min(earned_at.day, last_day)
    assert expires.timetz() == earned_at.timetz()
    assert expires > earned_at
    # Monotonic: more months never expire sooner.
    assert expiry_after_months(earned_at, months + 1) > expires


@pytest.mark.parametrize(
    ("earned", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2026, 1, 30), 1, date(2026, 2, 28)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 11, 30), 14, date(2028, 1, 30)),
        (date(2027, 2, 28), 12, date(2028, 2, 28)),
        (date(2028, 2, 29), 12, date(2029, 2, 28)),
    ],
)
def test_expiry_after_months_examples(earned: date, months: int, expected: date) -> None:
    earned_at = datetime(earned.year, earned.month, earned.day, 9, 30, tzinfo=UTC)
    assert expiry_after_months(earned_at, months) == datetime(
        expected.year, expected.month, expected.day, 9, 30, tzinfo=UTC
    )


# -- expiry at end of year --------------------------------------------------------------------


@given(instants, st.integers(0, 20), st.sampled_from(ZONES))
def test_expiry_end_of_year_is_new_year_midnight_in_the_program_zone(
    earned_at: datetime, years_after: int, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    expires = expiry_end_of_year(earned_at, years_after, zone)
    local = expires.astimezone(zone)
    assert (local.month, local.day, local.hour, local.minute, local.second) == (1, 1, 0, 0, 0)
    assert local.year == earned_at.astimezone(zone).year + years_after + 1
    assert expires > earned_at
    # Nothing earned in the same local year expires earlier or later.
    one_second_before = (expires - timedelta(seconds=1)).astimezone(zone)
    assert one_second_before.year == local.year - 1


def test_expiry_end_of_year_uses_the_program_zone() -> None:
    # 23:30 UTC on New Year's Eve is already 00:30 on 1 January 2027 in Stockholm.
    earned_at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    expires = expiry_end_of_year(earned_at, 0, STOCKHOLM)
    assert expires == datetime(2028, 1, 1, tzinfo=STOCKHOLM)
    assert expires.astimezone(UTC) == datetime(2027, 12, 31, 23, 0, tzinfo=UTC)
    # In UTC the same instant is still 2026.
    assert expiry_end_of_year(earned_at, 0, ZoneInfo("UTC")) == datetime(2027, 1, 1, tzinfo=UTC)
    # And half an hour earlier it is 2026 in Stockholm too.
    earlier = datetime(2026, 12, 31, 22, 30, tzinfo=UTC)
    assert expiry_end_of_year(earlier, 0, STOCKHOLM).astimezone(UTC) == datetime(
        2026, 12, 31, 23, 0, tzinfo=UTC
    )
    assert expiry_end_of_year(earlier, 2, STOCKHOLM) == datetime(2029, 1, 1, tzinfo=STOCKHOLM)


# -- money to points --------------------------------------------------------------------------

rates = st.builds(EarnRate, points=st.integers(0, 1_000_000), per_amount=st.integers(1, 10**12))
amounts = st.integers(-(10**12), 10**12)


@given(amounts, rates)
def test_points_for_amount_rounds_down_and_is_never_negative(amount: int, rate: EarnRate) -> None:
    points = points_for_amount(amount, rate)
    assert isinstance(points, int)
    assert points >= 0
    if amount <= 0:
        assert points == 0
    else:
        full_units = amount // rate.per_amount
        assert points == full_units * rate.points
        # Rounded down: the money left over never earns a point.
        assert points * rate.per_amount <= amount * rate.points


@given(amounts, amounts, rates)
def test_points_for_amount_is_monotonic(a: int, b: int, rate: EarnRate) -> None:
    assume(a != b)
    low, high = min(a, b), max(a, b)
    assert points_for_amount(low, rate) <= points_for_amount(high, rate)


@given(st.integers(0, 10**9), st.integers(0, 10**9), rates)
def test_points_for_split_amount_never_exceeds_the_whole(a: int, b: int, rate: EarnRate) -> None:
    # Rounding down per part: two halves of a purchase never earn more than the whole.
    assert points_for_amount(a, rate) + points_for_amount(b, rate) <= points_for_amount(a + b, rate)


@pytest.mark.parametrize(
    ("amount", "points", "per_amount", "expected"),
    [
        (0, 1, 1000, 0),
        (999, 1, 1000, 0),
        (1000, 1, 1000, 1),
        (25_999, 1, 1000, 25),
        (25_000, 3, 100, 750),
        (-5000, 1, 100, 0),
        (10**12, 1_000_000, 1, 10**18),
    ],
)
def test_points_for_amount_examples(
    amount: int, points: int, per_amount: int, expected: int
) -> None:
    assert points_for_amount(amount, EarnRate(points=points, per_amount=per_amount)) == expected


# -- one instant, one expiry ------------------------------------------------------------------


@given(instants, st.integers(1, 24), st.sampled_from(ZONES), st.integers(-12, 14))
@example(datetime(2026, 3, 30, 22, 30, tzinfo=UTC), 1, "Europe/Stockholm", 2)
def test_after_months_expiry_depends_on_the_instant_not_on_how_it_is_written(
    earned_at: datetime, months: int, zone_name: str, offset_hours: int
) -> None:
    # A till may send occurred_at as 2026-03-31T00:30:00+02:00 or as 2026-03-30T22:30:00Z:
    # months count in the program's zone, whatever offset the instant was written with.
    spec = ProgramSpec.model_validate(
        {
            "key": "zz",
            "name": "x",
            "currency": "SEK",
            "timezone": zone_name,
            "expiry": {"kind": "after_months", "months": months},
        }
    )
    written_locally = earned_at.astimezone(timezone(timedelta(hours=offset_hours)))
    expires = lot_dates(spec, earned_at)[1]
    assert expires == lot_dates(spec, written_locally)[1]
    assert expires is not None and expires.tzinfo == UTC
    zone = ZoneInfo(zone_name)
    local = earned_at.astimezone(zone)
    assert expires == expiry_after_months(local, months).astimezone(UTC)


def test_after_months_expiry_counts_days_in_the_program_zone() -> None:
    spec = ProgramSpec.model_validate(
        {
            "key": "zz",
            "name": "x",
            "currency": "SEK",
            "timezone": "Europe/Stockholm",
            "expiry": {"kind": "after_months", "months": 1},
        }
    )
    # 2026-01-30T23:30Z is 00:30 on 31 January in Stockholm: a month later is 28 February.
    _, expires = lot_dates(spec, datetime(2026, 1, 30, 23, 30, tzinfo=UTC))
    assert expires == datetime(2026, 2, 28, 0, 30, tzinfo=STOCKHOLM)
    # Across the switch to summer time the local wall-clock time is kept.
    _, expires = lot_dates(spec, datetime(2026, 3, 15, 10, 0, tzinfo=UTC))  # 11:00 CET
    assert expires == datetime(2026, 4, 15, 9, 0, tzinfo=UTC)  # 11:00 CEST
