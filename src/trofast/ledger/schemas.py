"""API models for balances, history, spending and adjustments."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BalanceView(BaseModel):
    member_id: int
    point_name: str
    available: int = Field(description="Spendable now (after any debt)")
    pending: int = Field(description="Earned but not yet vested")
    debt: int = Field(description="Points owed after a return of already-spent points")
    withheld: int = Field(
        0, description="Points the next earnings pay back (negative_balance: deduct)"
    )
    expiring_30_days: int
    expiring_60_days: int
    expiring_90_days: int
    lifetime_earned: int
    lifetime_spent: int
    lifetime_expired: int
    wallet: WalletView | None = Field(None, description="Cashback / store credit, if any")
    stamps: dict[str, int] = Field(default_factory=dict, description="Stamps per stamp card")


class WalletView(BaseModel):
    """Money in minor units of the program's currency."""

    currency: str
    available: int
    pending: int


class LedgerEntry(BaseModel):
    id: int
    kind: str
    points: int = Field(description="Change to spendable points (negative: out)")
    pending_change: int = Field(description="Change to pending points")
    cause: str | None = Field(description="The activity, reference or reason behind it")
    activity_external_id: str | None
    rule: str | None
    program_version: int | None
    actor: str
    reason: str | None
    reverses_id: int | None
    effective_at: datetime
    created_at: datetime


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: str | None


class SpendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(gt=0, le=10**12, description="Points, or minor units for `money`")
    reference: str = Field(
        min_length=1, max_length=150, description="Unique per spend, e.g. the order number"
    )
    unit: Literal["points", "money"] = Field("points", description="`money`: the wallet")


class AdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(
        ge=-(10**12), le=10**12, description="Positive credits, negative debits; not zero"
    )
    reason: str = Field(min_length=3, max_length=500)
    reference: str = Field(min_length=1, max_length=150, description="Unique per adjustment")


class PostingOut(BaseModel):
    transaction_id: int
    points: int
    available: int
    pending: int
    replayed: bool = False
