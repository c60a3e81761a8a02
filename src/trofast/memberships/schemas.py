"""API models of the memberships module."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from trofast.memberships.document import Period


class Status(StrEnum):
    """A membership's status at a moment."""

    #: The member never had a membership in this program.
    none = "none"
    #: In the free trial.
    trial = "trial"
    #: Paid; renews when the next payment comes.
    active = "active"
    #: A payment failed, or the paid period ended without a payment: the membership still
    #: runs until `grace_until`, then lapses unless a payment comes.
    grace = "grace"
    #: Cancelled: runs until the end of what was paid (`ends_at`), then lapses; no renewal.
    cancelled = "cancelled"
    #: Ended.
    lapsed = "lapsed"


class MembershipOut(BaseModel):
    member_id: int
    status: Status
    plan: str | None
    name: str | None
    price: int | None
    currency: str
    period: Period | None
    started_at: datetime | None
    trial_until: datetime | None
    #: End of what is covered (the trial and every paid period).
    paid_until: datetime | None
    #: Whether the membership goes on with the next payment (not cancelled, not lapsed).
    renews: bool
    #: When the next payment is due, while it renews.
    renews_at: datetime | None
    #: In grace: the moment it lapses unless a payment comes.
    grace_until: datetime | None
    #: When it ends unless a payment comes (a cancelled one: the end of what was paid).
    ends_at: datetime | None
    lapsed_at: datetime | None
    #: The plan's benefits while the membership runs (empty, 100 when it does not).
    perks: list[str]
    earn_multiplier_percent: int
    rewards: list[str]


class MembershipChangeOut(BaseModel):
    kind: str
    plan: str
    reference: str | None
    amount: int | None
    paid_until: datetime | None
    at: datetime
    actor: str


class MembershipHistoryOut(BaseModel):
    items: list[MembershipChangeOut]
