"""API models of the rewards module."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trofast.activities.schemas import LineIn
from trofast.rewards.document import Channel


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardView(BaseModel):
    """A catalogue entry as a member or a till sees it."""

    id: str
    type: str
    name: str | None
    description: str | None
    image: str | None
    cost: int
    channels: list[Channel]
    valid_days: int | None
    stock_left: int | None = Field(description="Units left; null: unlimited")
    available_from: datetime | None
    available_until: datetime | None
    eligible: bool | None = Field(None, description="Whether the asked-about member may redeem")
    affordable: bool | None = Field(None, description="Whether that member has the points")
    details: dict[str, Any] = Field(description="The type's own fields, e.g. amount, sku")


class RedeemIn(_In):
    reward: str = Field(min_length=1, max_length=63)
    reference: str = Field(
        min_length=1, max_length=150, description="Unique per redemption: a repeat replays"
    )
    channel: Channel | None = Field(None, description="Where the member redeems")


class GrantIn(_In):
    reward: str = Field(min_length=1, max_length=63)
    reference: str = Field(min_length=1, max_length=150)
    reason: str = Field(min_length=1, max_length=500)


class VoucherOut(BaseModel):
    code: str
    member_id: int
    reward: str
    type: str
    status: str
    points: int
    name: str | None
    benefit: dict[str, Any]
    gift_card_code: str | None = None
    issued_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    used_by: str | None
    cancelled_at: datetime | None
    replayed: bool = False


class VoucherPage(BaseModel):
    items: list[VoucherOut]
    next_cursor: str | None


class BasketIn(_In):
    """What is being bought: the total and, for scoped vouchers, the lines."""

    amount: int = Field(ge=0, le=10**12)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    channel: Channel = Channel.store
    lines: list[LineIn] = Field(default_factory=list, max_length=500)


class ValidateIn(_In):
    basket: BasketIn


class ValidationOut(BaseModel):
    valid: bool
    reason: str | None = Field(None, description="Why not, as a stable code")
    detail: str | None = None
    discount: int = Field(0, description="Money off in minor units")
    voucher: VoucherOut


class ConsumeIn(_In):
    purchase_external_id: str = Field(min_length=1, max_length=100)
    basket: BasketIn | None = Field(None, description="Checked like validate when given")


class PerkOut(BaseModel):
    type: str
    reward: str
    value: str | None = Field(description="The access, perk or event the flag stands for")
    code: str
    expires_at: datetime | None


class PerksOut(BaseModel):
    member_id: int
    free_shipping: bool = Field(description="From a voucher or from the member's tier")
    tier: str | None = Field(None, description="The member's tier, if the program has tiers")
    tier_perks: list[str] = Field(default_factory=list, description="Perks of that tier")
    plan: str | None = Field(None, description="The member's running paid-membership plan")
    plan_perks: list[str] = Field(default_factory=list, description="Perks of that plan")
    perks: list[PerkOut] = Field(description="Perks from the member's vouchers")


class CodesIn(_In):
    codes: list[str] = Field(min_length=1, max_length=100_000)


class PoolOut(BaseModel):
    pool: str
    total: int
    available: int
    low_stock: int | None
    running_low: bool


class ImportOut(BaseModel):
    pool: str
    added: int
    duplicates: int
    available: int


class DonationOut(BaseModel):
    cause: str
    donations: int
    points: int
    amount: int


class PayIn(_In):
    purchase_external_id: str = Field(min_length=1, max_length=100)
    points: int = Field(gt=0, le=10**12)
    purchase_amount: int | None = Field(
        None, ge=0, le=10**12, description="The purchase total, to apply the share limit"
    )


class PayOut(BaseModel):
    transaction_id: int
    points: int
    amount: int = Field(description="Money the points pay, in minor units")
    currency: str
    available: int
    replayed: bool = False
