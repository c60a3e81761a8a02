"""API models of the tiers module."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from trofast.tiers.document import Combine, Metric


class NeedOut(BaseModel):
    """What is still needed of one metric, and by when (the window's last day, program zone;
    none for a rolling window)."""

    metric: Metric
    needed: int
    by: date | None


class NextTierOut(BaseModel):
    tier: str
    name: str | None
    #: `all`: every metric below must be reached; `any`: one of them is enough.
    combine: Combine
    needed: list[NeedOut]


class FloorOut(BaseModel):
    tier: str
    until: date


class TierOut(BaseModel):
    member_id: int
    tier: str
    name: str | None
    since: datetime
    #: The last day (program zone) the tier is secured; none in the entry tier.
    secured_until: date | None
    #: Set when the member fell short at a period end: the downgrade waits until this day.
    grace_until: date | None
    floor: FloorOut | None
    earn_multiplier_percent: int
    perks: list[str]
    #: The qualification window counted now: first and last day (program zone).
    window_from: date
    window_until: date
    metrics: dict[Metric, int]
    next: NextTierOut | None


class TierSetIn(BaseModel):
    """An admin's tier for a member: also a floor the member stays at or above until the
    end of `until` (program zone)."""

    model_config = ConfigDict(extra="forbid")

    tier: str = Field(min_length=1, max_length=63)
    until: date


class TierChangeOut(BaseModel):
    from_tier: str | None
    to_tier: str
    reason: str
    actor: str
    at: datetime


class TierHistoryOut(BaseModel):
    items: list[TierChangeOut]
