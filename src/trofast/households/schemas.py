"""API models for households and points transfers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: A member by id (a number) or by 12-digit loyalty number (a string).
MemberRef = Annotated[
    int | str,
    Field(examples=[42, "123456789012"], description="Member id or loyalty number"),
]


class HouseholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: MemberRef
    name: str = Field(min_length=1, max_length=100, examples=["The Lindqvists"])


class HouseholdMember(BaseModel):
    member_id: int
    loyalty_number: str
    first_name: str | None
    role: Literal["owner", "member"]
    joined_at: datetime
    available: int = Field(description="The member's spendable points")
    pending: int = Field(description="The member's points not yet vested")


class HouseholdOut(BaseModel):
    id: int
    name: str
    owner_id: int
    created_at: datetime
    members: list[HouseholdMember] = Field(description="Longest-standing first")
    pooled_available: int = Field(description="Sum of the members' available points")
    pooled_pending: int


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member: MemberRef


class InviteOut(BaseModel):
    household_id: int
    member_id: int
    status: Literal["pending", "accepted", "declined", "revoked"]
    created_at: datetime
    expires_at: datetime
    answered_at: datetime | None
    token: str | None = Field(
        None, description="Only in the answer that creates the invitation: shown once"
    )


class LeaveOut(BaseModel):
    member_id: int
    household_id: int
    owner_id: int | None = Field(
        description="Who owns the household now (the longest-standing member when the owner"
        " left); null when nobody is left"
    )


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: MemberRef
    points: int = Field(gt=0, le=10**12)
    reference: str = Field(
        min_length=1, max_length=150, description="Unique per transfer: makes it idempotent"
    )


class TransferOut(BaseModel):
    transaction_id: int = Field(description="The sender's `transfer_out` ledger transaction")
    from_member_id: int
    to_member_id: int
    points: int
    reference: str
    available: int = Field(description="The sender's available points after the transfer")
    replayed: bool
