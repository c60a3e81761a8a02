"""The tiers part of the program document: the ordered tiers and how members qualify.

The first tier is the entry tier every member starts in. A member moves up at once when the
metrics of the current qualification window reach a higher tier's thresholds, and down
only when a qualification period ends (after the grace days). Documented with an example
for every field in docs/tiers.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from trofast.rewards.document import Text

TIER_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PERK = r"^[a-z][a-z0-9_]{0,39}$"
#: Perks the shop, the portal and support know; a program may name its own as well.
KNOWN_PERKS = ("free_shipping", "vip_service", "lounge", "event_access", "priority_support")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(StrEnum):
    """What a tier's thresholds count, over the qualification window."""

    #: Purchases minus returns, in minor units of the program currency.
    spend = "spend"
    #: Points earned by activities (see `TierQualification.points`), minus points taken back.
    points = "points"
    #: Number of purchases.
    purchases = "purchases"
    #: Number of `store_visit` events.
    visits = "visits"
    #: Number of events of type `TierQualification.flight_event`.
    flights = "flights"


class Combine(StrEnum):
    all = "all"
    any = "any"


class PointsSource(StrEnum):
    """Which points count for the `points` metric."""

    all = "all"
    purchases = "purchases"


class Downgrade(StrEnum):
    """At a period's end a member who did not requalify moves down one tier, or to the
    tier the period's metrics reach (`recalculate`, possibly several tiers at once)."""

    one_step = "one_step"
    recalculate = "recalculate"


class Window(StrEnum):
    calendar_year = "calendar_year"
    calendar_quarter = "calendar_quarter"
    anniversary_year = "anniversary_year"


class RollingWindow(_Strict):
    """The last `rolling_months` months, counted back from now."""

    rolling_months: int = Field(ge=1, le=60)


class TierQualification(_Strict):
    """How members qualify for the tiers, and how they lose them."""

    metrics: list[Metric] = Field(
        default_factory=lambda: [Metric.spend], min_length=1, max_length=5
    )
    combine: Combine = Field(
        Combine.all, description="With several metrics: reach all thresholds, or any one"
    )
    points: PointsSource = Field(PointsSource.all, description="Which points count")
    flight_event: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_.-]{0,49}$",
        description="Event type counted by the `flights` metric",
    )
    window: Window | RollingWindow = Window.calendar_year
    downgrade: Downgrade = Downgrade.one_step
    grace_days: int = Field(0, ge=0, le=365, description="Days a tier is kept after its end")

    @property
    def rolling_months(self) -> int | None:
        return self.window.rolling_months if isinstance(self.window, RollingWindow) else None


class Tier(_Strict):
    """One tier with its thresholds and benefits."""

    id: str = Field(pattern=TIER_ID, description="Stable id; rules match it as `tier.name`")
    name: Text
    threshold: dict[Metric, Annotated[int, Field(ge=0, le=10**13)]] = Field(
        default_factory=dict,
        description="Per metric of the qualification; the entry tier has none",
    )
    earn_multiplier_percent: int = Field(
        100, ge=100, le=1000, description="Paid by a multiplier rule with `by: tier`"
    )
    perks: list[Annotated[str, Field(pattern=PERK)]] = Field(default_factory=list, max_length=20)
    welcome_points: int = Field(
        0, ge=0, le=10**9, description="Points given once when a member first reaches it"
    )


Tiers = Annotated[list[Tier], Field(max_length=20)]


def check_tiers(tiers: list[Tier], qualification: TierQualification, events: set[str]) -> None:
    """Cross-checks between the tiers and their qualification; raises ValueError naming
    the path of the first problem (the program document reports it)."""
    for index, metric in enumerate(qualification.metrics):
        if metric in qualification.metrics[:index]:
            raise ValueError(f"tier_qualification.metrics.{index}: {metric.value!r} is named twice")
    if Metric.flights in qualification.metrics and qualification.flight_event is None:
        raise ValueError(
            "tier_qualification.flight_event: name the event type the flights metric counts"
        )
    ids = [tier.id for tier in tiers]
    for index, tier_id in enumerate(ids):
        if tier_id in ids[:index]:
            raise ValueError(f"tiers.{index}.id: {tier_id!r} is used twice")
    metrics = set(qualification.metrics)
    for index, tier in enumerate(tiers):
        where = f"tiers.{index}"
        extra = set(tier.threshold) - metrics
        if extra:
            names = ", ".join(sorted(m.value for m in extra))
            raise ValueError(
                f"{where}.threshold: {names} is not a metric of tier_qualification.metrics"
            )
        if index == 0:
            if any(value > 0 for value in tier.threshold.values()):
                raise ValueError(f"{where}.threshold: the first (entry) tier has no threshold")
            continue
        missing = metrics - set(tier.threshold)
        if missing:
            names = ", ".join(sorted(m.value for m in missing))
            raise ValueError(f"{where}.threshold: give a threshold for {names}")
        if index > 1:
            below = tiers[index - 1]
            for metric in qualification.metrics:
                if tier.threshold[metric] < below.threshold[metric]:
                    raise ValueError(
                        f"{where}.threshold.{metric.value}: lower than {below.id!r} "
                        f"({below.threshold[metric]}); tiers are ordered from the lowest"
                    )
            if all(tier.threshold[m] == below.threshold[m] for m in qualification.metrics):
                raise ValueError(f"{where}.threshold: the same as {below.id!r}")
    flight = qualification.flight_event
    if tiers and flight is not None and flight not in events:
        raise ValueError(
            f"tier_qualification.flight_event: unknown event type {flight!r}; "
            "declare it in event_types"
        )
