"""API models of the partner endpoints. A partner sees a member's loyalty number and name
only: never an id, a balance, a ledger or another partner's activities."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from trofast.rewards.schemas import BasketIn


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartnerMemberOut(BaseModel):
    loyalty_number: str
    name: str | None = Field(description="First and last name, as far as the member gave them")


class PartnerActivityIn(_In):
    type: Literal["purchase", "return"] = "purchase"
    external_id: str = Field(
        min_length=1, max_length=100, description="The partner's receipt number: a repeat replays"
    )
    loyalty_number: str = Field(min_length=1, max_length=20)
    amount: int = Field(ge=0, le=10**12, description="Minor units")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    occurred_at: AwareDatetime | None = Field(None, description="Default: now")
    original_external_id: str | None = Field(
        None, min_length=1, max_length=100, description="A return: the purchase it returns"
    )


class PartnerActivityOut(BaseModel):
    id: int
    type: str
    external_id: str
    partner: str
    loyalty_number: str
    amount: int
    currency: str
    points: int = Field(description="Earned (a purchase) or taken back (a return)")
    original_external_id: str | None = None
    occurred_at: datetime
    replayed: bool = False


class PartnerActivitiesOut(BaseModel):
    items: list[PartnerActivityOut]
    next_cursor: str | None


class PartnerVoucherOut(BaseModel):
    code: str
    reward: str
    type: str
    name: str | None
    status: str
    points: int
    expires_at: datetime | None
    used_at: datetime | None
    used_by: str | None
    replayed: bool = False


class PartnerValidateIn(_In):
    basket: BasketIn


class PartnerConsumeIn(_In):
    purchase_external_id: str = Field(min_length=1, max_length=100)
    basket: BasketIn | None = None


class PartnerValidationOut(BaseModel):
    valid: bool
    reason: str | None = None
    detail: str | None = None
    discount: int = 0
    voucher: PartnerVoucherOut


class SettlementLine(BaseModel):
    partner: str
    name: str
    points_issued: int = Field(description="Issued by the partner, net of its returns")
    issued_value: int = Field(description="Owed by the partner, minor units")
    points_redeemed: int = Field(description="Redeemed at the partner")
    redeemed_value: int = Field(description="Owed to the partner, minor units")
    net: int = Field(description="issued_value - redeemed_value: > 0 the partner pays")


class SettlementOut(BaseModel):
    program: str
    month: str
    currency: str
    partners: list[SettlementLine]
