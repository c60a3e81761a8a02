"""The rewards part of the program document: the catalogue and pay-with-points.

Every reward has an id, a type with its own fields, a cost in points (0: only granted, by a
rule, a tier or an admin), validity, stock, per-member limits, eligibility, channels and
localized texts. Documented with examples in docs/rewards.md.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

REWARD_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
POOL_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: A text in one language, or one per locale: {"sv": "Gratis kaffe", "en": "Free coffee"}.
Text = str | dict[Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")], str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(StrEnum):
    store = "store"
    online = "online"


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    year = "year"
    ever = "ever"


class MemberLimit(_Strict):
    """At most `count` vouchers of this reward per member per calendar `per` (program zone)."""

    count: int = Field(ge=1, le=1_000_000)
    per: Period = Period.ever


class Eligibility(_Strict):
    """Who may redeem: members with any of `tags` (segments) and in any of `tiers`.
    An empty list does not restrict."""

    tags: list[str] = Field(default_factory=list, max_length=50)
    tiers: list[str] = Field(default_factory=list, max_length=20)


class Scope(_Strict):
    """The basket lines a discount applies to; empty: the whole basket."""

    skus: list[str] = Field(default_factory=list, max_length=500)
    categories: list[str] = Field(default_factory=list, max_length=100)

    def covers(self, sku: str, category: str | None) -> bool:
        if not self.skus and not self.categories:
            return True
        return sku in self.skus or (category is not None and category in self.categories)


class _Reward(_Strict):
    id: str = Field(pattern=REWARD_ID)
    name: Text
    description: Text | None = None
    image: str | None = Field(None, max_length=500, description="URL of a picture")
    cost: int = Field(ge=0, le=10**9, description="Points; 0 means granted only")
    valid_days: int | None = Field(
        None, ge=1, le=3650, description="Days a voucher stays usable; none: no end"
    )
    stock: int | None = Field(None, ge=0, description="How many may ever be issued")
    limit: MemberLimit | None = None
    eligible: Eligibility = Eligibility()
    channels: list[Channel] = Field(default_factory=lambda: [Channel.store, Channel.online])
    available_from: AwareDatetime | None = None
    available_until: AwareDatetime | None = None
    #: Whether returning the purchase a voucher was used on makes it usable again.
    restore_on_return: bool = True
    partner: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="A partner reward: its vouchers are used at this partner (docs/partners.md)",
    )

    def on_offer(self, now: datetime) -> bool:
        return (self.available_from is None or self.available_from <= now) and (
            self.available_until is None or now < self.available_until
        )


class Discount(_Reward):
    """Money off the next purchase: a fixed `amount` (minor units) or a `percent`."""

    type: Literal["discount"]
    amount: int | None = Field(None, ge=1, le=10**10)
    percent: int | None = Field(None, ge=1, le=100)
    min_order: int = Field(0, ge=0, description="Smallest basket (minor units) it applies to")
    max_discount: int | None = Field(None, ge=1, description="Cap on a percent discount")
    scope: Scope = Scope()

    @model_validator(mode="after")
    def _one_kind(self) -> Discount:
        if (self.amount is None) == (self.percent is None):
            raise ValueError("a discount has either amount or percent")
        return self


class FreeProduct(_Reward):
    """One unit of `sku` free (its price in the basket is the discount)."""

    type: Literal["free_product"]
    sku: str = Field(min_length=1, max_length=64)


class GiftCard(_Reward):
    """A gift card: a code taken from `pool` (imported from a provider), or generated."""

    type: Literal["gift_card"]
    value: int = Field(ge=1, description="Face value in minor units")
    pool: str | None = Field(None, pattern=POOL_ID, description="Code pool; none: generate")
    low_stock: int = Field(10, ge=0, description="Codes left that count as running low")
    restore_on_return: bool = False


class FreeShipping(_Reward):
    """Shipping lines (category `shipping`) of the next online order are free."""

    type: Literal["free_shipping"]
    channels: list[Channel] = Field(default_factory=lambda: [Channel.online])


class EarlyAccess(_Reward):
    """A flag the shop checks: access to `access` (a preview, a sale) while valid."""

    type: Literal["early_access"]
    access: str = Field(min_length=1, max_length=100)


class Event(_Reward):
    """A place at a VIP event; `stock` is the number of places."""

    type: Literal["event"]
    event: str = Field(min_length=1, max_length=200, description="What and where")
    starts_at: AwareDatetime | None = None


class ServicePerk(_Reward):
    """A flag the support system checks, e.g. a priority line, while valid."""

    type: Literal["service_perk"]
    perk: str = Field(min_length=1, max_length=100)


class Donation(_Reward):
    """Points turned into a donation to `cause`; `amount` is what the business gives."""

    type: Literal["donation"]
    cause: str = Field(min_length=1, max_length=100)
    amount: int = Field(ge=0, description="Donated money in minor units per redemption")


class Cashback(_Reward):
    """Points turned into money in the member's wallet (store credit)."""

    type: Literal["cashback"]
    amount: int = Field(ge=1, description="Money credited in minor units")


class Custom(_Reward):
    """Fulfilled by the business's own system from the `reward.redeemed` outbox event."""

    type: Literal["custom"]
    attributes: dict[str, str | int | bool] = Field(default_factory=dict, max_length=50)


Reward = Annotated[
    Discount
    | FreeProduct
    | GiftCard
    | FreeShipping
    | EarlyAccess
    | Event
    | ServicePerk
    | Donation
    | Cashback
    | Custom,
    Field(discriminator="type"),
]


#: Fields every reward type has; the rest are the type's own (its `details` in the API).
COMMON_FIELDS = frozenset(_Reward.model_fields) | {"type"}


class PayWithPoints(_Strict):
    """Paying part of a purchase with points at `point_value` (the program's valuation)."""

    enabled: bool = False
    min_points: int = Field(1, ge=1)
    max_share_percent: int = Field(
        100, ge=1, le=100, description="At most this share of a purchase paid with points"
    )


def localized(text: Text | None, locale: str | None, fallback: str) -> str | None:
    """`text` in `locale` (or its language), else the program's first locale, else any."""
    if text is None or isinstance(text, str):
        return text
    for key in (locale, (locale or "").split("-")[0], fallback):
        if key and key in text:
            return text[key]
    return next(iter(text.values()), None)
