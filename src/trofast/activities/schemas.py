"""API models for activities: purchases, returns and custom events."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from trofast.kit.orm import MAX_ID
from trofast.ledger.service import Balance


def _utc_representable(value: datetime) -> datetime:
    """Refuse times that overflow when stored as UTC, such as 0001-01-01T00:00+14:00."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_utc_representable)]


class SalesChannel(StrEnum):
    store = "store"
    online = "online"
    app = "app"
    partner = "partner"


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str = Field(min_length=1, max_length=64)
    category: str | None = Field(None, max_length=64)
    quantity: int = Field(1, gt=0, le=1_000_000)
    amount: int = Field(ge=0, le=10**12, description="Line total in minor units")
    labels: list[str] = Field(default_factory=list, max_length=20)


class _MemberRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: int | None = Field(None, gt=0, le=MAX_ID)
    loyalty_number: str | None = Field(None, min_length=1, max_length=20)
    user_external_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The member's user who made it (a company's buyer, see /members/{ref}/users)",
    )

    @model_validator(mode="after")
    def _one_ref(self) -> _MemberRef:
        if self.member_id is not None and self.loyalty_number is not None:
            raise ValueError("give member_id or loyalty_number, not both")
        return self


class PurchaseIn(_MemberRef):
    """A sale; without a member it is kept for analytics (anonymous purchase)."""

    type: Literal["purchase"]
    external_id: str = Field(min_length=1, max_length=100, description="Receipt number")
    occurred_at: Instant | None = None
    amount: int = Field(ge=0, le=10**12, description="Total in minor units, e.g. 4950 = 49.50")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    store: str | None = Field(None, max_length=100)
    channel: SalesChannel = SalesChannel.store
    lines: list[LineIn] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _lines_add_up(self) -> PurchaseIn:
        if self.lines and sum(line.amount for line in self.lines) != self.amount:
            raise ValueError("the lines' amounts must add up to the purchase amount")
        return self


class ReturnIn(BaseModel):
    """Goods brought back: the whole purchase, some lines, or an amount of it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["return"]
    external_id: str = Field(min_length=1, max_length=100)
    original_external_id: str = Field(min_length=1, max_length=100)
    occurred_at: Instant | None = None
    amount: int | None = Field(None, gt=0, le=10**12)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    lines: list[LineIn] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _lines_add_up(self) -> ReturnIn:
        if (
            self.lines
            and self.amount is not None
            and sum(line.amount for line in self.lines) != self.amount
        ):
            raise ValueError("the lines' amounts must add up to the return amount")
        return self


class EventIn(_MemberRef):
    """Anything else a member did: a visit, a review, a survey answer..."""

    type: Literal["event"]
    external_id: str = Field(min_length=1, max_length=100)
    event_type: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,49}$")
    occurred_at: Instant | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_member(self) -> EventIn:
        if self.member_id is None and self.loyalty_number is None:
            raise ValueError("an event needs member_id or loyalty_number")
        return self


ActivityIn = Annotated[PurchaseIn | ReturnIn | EventIn, Field(discriminator="type")]


class EffectOut(BaseModel):
    rule: str
    points: int = 0
    cashback: int = 0
    vests_at: datetime | None = None
    expires_at: datetime | None = None
    reward: str | None = Field(None, description="A reward the rule granted")
    voucher: str | None = Field(
        None, description="The granted voucher's code; null when none was left to give"
    )


class MembershipChangeOut(BaseModel):
    """What a payment provider's event did to the member's paid membership."""

    kind: str = Field(description="started, renewed, payment_failed, cancelled, ...")
    plan: str
    paid_until: datetime | None


class BalanceOut(BaseModel):
    available: int
    pending: int

    @classmethod
    def of(cls, balance: Balance) -> BalanceOut:
        return cls.model_construct(available=balance.available, pending=balance.pending)


class ActivityResult(BaseModel):
    """What an accepted activity did: points earned (negative: taken back) and the new balance."""

    id: int
    external_id: str
    type: str
    member_id: int | None
    points: int
    cashback: int = Field(0, description="Money credited to the wallet (negative: taken back)")
    uncollected: int = Field(0, description="Of the points to take back: already spent")
    written_off: int = Field(0, description="Of the points to take back: already expired")
    withheld: int = Field(
        0, description="Of the points to take back: withheld from future earnings (deduct)"
    )
    effects: list[EffectOut] = Field(default_factory=list)
    tier: str | None = Field(None, description="The member's tier the rules saw, if tiers exist")
    plan: str | None = Field(None, description="The member's running plan the rules saw, if any")
    new_tier: str | None = Field(None, description="The tier this activity lifted the member to")
    membership: MembershipChangeOut | None = Field(
        None, description="What a membership event changed (none: nothing, e.g. a repeat)"
    )
    notes: list[str] = Field(default_factory=list, description="Why rules gave what they gave")
    balance: BalanceOut | None
    program_version: int
    replayed: bool = False
    dry_run: bool = False


class BatchIn(BaseModel):
    activities: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class BatchItem(BaseModel):
    index: int
    status: int
    result: ActivityResult | None = None
    problem: dict[str, Any] | None = None


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    items: list[BatchItem]
