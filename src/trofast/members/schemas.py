"""API models for members."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

Tag = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,49}$")]


class Channel(StrEnum):
    store = "store"
    online = "online"
    app = "app"
    import_ = "import"
    api = "api"


class Status(StrEnum):
    active = "active"
    suspended = "suspended"
    #: Set only by an erasure (docs/privacy.md); a shell without personal data.
    erased = "erased"


class Kind(StrEnum):
    """A person, or a company whose users (buyers...) act for it."""

    person = "person"
    company = "company"


class MemberIn(BaseModel):
    """Enrolment: at least an e-mail address or a phone number."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    phone: str | None = Field(None, max_length=32, examples=["+46701234567"])
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    birth_date: date | None = None
    locale: str | None = Field(None, max_length=10, examples=["sv"])
    marketing_consent: bool = False
    external_id: str | None = Field(None, min_length=1, max_length=100)
    channel: Channel = Channel.api
    tags: list[Tag] = Field(
        default_factory=list, max_length=50, description="Segments, e.g. for personal offers"
    )
    kind: Kind = Field(Kind.person, description="company: may have users (docs/api.md)")

    @model_validator(mode="after")
    def _contact(self) -> MemberIn:
        if not self.email and not self.phone:
            raise ValueError("an email or a phone number is required")
        return self


class MemberPatch(BaseModel):
    """A partial update; fields left out stay as they are, null clears them."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    phone: str | None = Field(None, max_length=32)
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    birth_date: date | None = None
    locale: str | None = Field(None, max_length=10)
    marketing_consent: bool | None = None
    status: Literal[Status.active, Status.suspended] | None = None
    tags: list[Tag] | None = Field(None, max_length=50)


class MemberOut(BaseModel):
    id: int
    loyalty_number: str | None = Field(description="Null once the member is erased")
    external_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    birth_date: date | None
    locale: str | None
    marketing_consent: bool
    channel: str
    status: Status
    kind: Kind
    tags: list[str]
    household_id: int | None = Field(None, description="The household the member is in")
    enrolled_at: datetime
    updated_at: datetime


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class UserIn(BaseModel):
    """A user of a company member: someone who buys or acts for it."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(
        min_length=1, max_length=100, description="The user's id in your system; unique"
    )
    name: str | None = Field(None, max_length=200)
    email: EmailStr | None = None
    role: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,49}$", examples=["buyer"])


class UserOut(BaseModel):
    member_id: int
    external_id: str
    name: str | None
    email: str | None
    role: str | None
    created_at: datetime


class UserList(BaseModel):
    items: list[UserOut]


class ErasureIn(BaseModel):
    """Why the member's personal data is erased (e.g. "GDPR art. 17 request 2026-11-23");
    recorded with the erasure, so it must not contain personal data itself."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class ErasureOut(BaseModel):
    """What an erasure did; asking again answers the same."""

    member_id: int
    status: Status
    erased_at: datetime
    reason: str
    erased_by: str = Field(description="The API key (apikey:ID) or CLI user that erased")
    points_forfeited: int = Field(description="Available points moved to `adjustment`")
    pending_points_forfeited: int = Field(description="Pending points taken back to `issuance`")
    money_forfeited: int = Field(description="The money wallet's balance, minor units")
    vouchers_cancelled: int
    messages_dropped: int = Field(description="Undelivered outbox messages about the member")
