"""The earning part of the program document: rules, conditions, effects, limits, stamp cards.

Pure data, validated by Pydantic; `rules.conditions` compiles the conditions once per program
version and `rules.engine` evaluates them. Every field is documented in docs/program-file.md.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
EVENT_TYPE = r"^[a-z][a-z0-9_.-]{0,49}$"

#: Event types every program understands without declaring them.
BUILT_IN_EVENTS = (
    "signup",
    "profile_completed",
    "store_visit",
    "review",
    "social_share",
    "referral_completed",
    "survey_answered",
    "birthday",
    *("membership_payment", "membership_cancelled", "payment_failed"),  # docs/memberships.md
)


#: Every field a condition may read (activity.attributes.* is open-ended).
FIELDS = frozenset(
    {
        "activity.type",
        "activity.amount",
        "activity.currency",
        "activity.store",
        "activity.channel",
        "activity.event_type",
        "line.sku",
        "line.category",
        "line.labels",
        "line.quantity",
        "line.amount",
        "member.id",
        "member.status",
        "member.age",
        "member.tags",
        "member.channel",
        "member.days_enrolled",
        "member.birthday_today",
        "member.birthday_week",
        "tier.name",
        "member.plan",
        "now.date",
        "now.year",
        "now.month",
        "now.day",
        "now.weekday",
        "now.hour",
        "now.minute",
    }
)


def known_field(field: str) -> bool:
    """Whether a condition may read `field`."""
    return field in FIELDS or field.startswith("activity.attributes.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Op(StrEnum):
    eq = "eq"
    ne = "ne"
    in_ = "in"
    not_in = "not_in"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    between = "between"
    contains = "contains"
    exists = "exists"


class Clause(Strict):
    """`field` `op` `value`, e.g. {field: activity.channel, op: in, value: [app, online]}."""

    field: str = Field(max_length=80, pattern=r"^(activity|line|member|tier|now)(\.[a-z0-9_]+)+$")
    op: Op = Op.eq
    value: Any = None

    @field_validator("value", mode="before")
    @classmethod
    def _dates_as_text(cls, value: Any) -> Any:
        """YAML reads 2026-03-01 as a date; conditions compare `now.date` as ISO text."""
        if isinstance(value, list):
            return [v.isoformat() if isinstance(v, date) else v for v in value]
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _value_fits(self) -> Clause:
        if not known_field(self.field):
            raise ValueError(f"unknown field {self.field!r} (see docs/program-file.md)")
        if self.op in (Op.in_, Op.not_in) and not isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a list value")
        if self.op is Op.between and not (isinstance(self.value, list) and len(self.value) == 2):
            raise ValueError("'between' needs a [low, high] value")
        if isinstance(self.value, list) and len(self.value) > 500:
            raise ValueError("at most 500 values")
        if isinstance(self.value, str) and len(self.value) > 200:
            raise ValueError("a value may have at most 200 characters")
        return self


class LineFilter(Strict):
    """Which basket lines count; empty lists mean no restriction. Its `when` may read
    `line.*` fields (a rule's own `when` may not)."""

    skus: list[str] = Field(default_factory=list, max_length=1000)
    categories: list[str] = Field(default_factory=list, max_length=200)
    labels: list[str] = Field(default_factory=list, max_length=50)
    exclude_skus: list[str] = Field(default_factory=list, max_length=1000)
    exclude_categories: list[str] = Field(default_factory=list, max_length=200)
    when: list[Clause] = Field(default_factory=list, max_length=20)


class PerAmount(Strict):
    """`points` for every full `per_amount` minor units of the qualifying amount."""

    kind: Literal["per_amount"]
    points: int = Field(gt=0, le=1_000_000)
    per_amount: int = Field(gt=0, le=10**12)


class Fixed(Strict):
    """`points` once per qualifying activity."""

    kind: Literal["fixed"]
    points: int = Field(gt=0, le=10**9)


class PerUnit(Strict):
    """`points` for each qualifying unit (line quantity), e.g. 50 points per bag of coffee."""

    kind: Literal["per_unit"]
    points: int = Field(gt=0, le=10**9)


class Multiplier(Strict):
    """Multiply what the rules in `of` earned (on this rule's qualifying lines) by `percent`/100.

    `percent: 200` doubles them: the rule adds the extra 100%. `by: tier` (or `by: plan`)
    takes the percent from the member's tier (or paid-membership plan) instead: its
    `earn_multiplier_percent`, which so lives in one place (docs/decisions/0006).
    """

    kind: Literal["multiplier"]
    percent: int | None = Field(None, gt=100, le=10_000)
    by: Literal["tier", "plan"] | None = Field(
        None, description="Take the percent from the member's tier or plan"
    )
    of: list[str] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_percent(self) -> Multiplier:
        if (self.percent is None) == (self.by is None):
            raise ValueError("give either percent or by (tier or plan)")
        return self


class FromAttribute(Strict):
    """Points from an activity attribute, e.g. flight distance times a fare-class factor.

    points = attribute * points / per * factor(factor_by) / 100, rounded down.
    """

    kind: Literal["attribute"]
    attribute: str = Field(pattern=r"^[a-z0-9_]{1,50}$")
    points: int = Field(1, gt=0, le=1_000_000)
    per: int = Field(1, gt=0, le=1_000_000)
    factor_by: str | None = Field(None, pattern=r"^[a-z0-9_]{1,50}$")
    factors: dict[str, int] = Field(default_factory=dict, description="percent per value")
    default_factor: int = Field(100, ge=0, le=10_000)


class Cashback(Strict):
    """Credit `basis_points`/10,000 of the qualifying amount to the member's money wallet."""

    kind: Literal["cashback"]
    basis_points: int = Field(gt=0, le=10_000)


class Stamp(Strict):
    """Stamps on a stamp card: one per qualifying unit, or one per activity."""

    kind: Literal["stamp"]
    card: str = Field(pattern=RULE_ID)
    per: Literal["unit", "activity"] = "unit"


class GrantReward(Strict):
    """Give the member a voucher for `reward` (a catalogue id) for free."""

    kind: Literal["reward"]
    reward: str = Field(pattern=RULE_ID)


Effect = Annotated[
    PerAmount | Fixed | PerUnit | Multiplier | FromAttribute | Cashback | Stamp | GrantReward,
    Field(discriminator="kind"),
]


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    year = "year"
    ever = "ever"


class MemberLimit(Strict):
    """At most `points` and/or `times` per member per `period` (program time zone)."""

    period: Period
    points: int | None = Field(None, gt=0)
    times: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> MemberLimit:
        if self.points is None and self.times is None:
            raise ValueError("give points and/or times")
        return self


class Limits(Strict):
    per_activity: int | None = Field(None, gt=0, description="points per activity at most")
    per_member: list[MemberLimit] = Field(default_factory=list, max_length=5)
    budget: int | None = Field(None, gt=0, description="points the rule may issue in total")


class EarnRate(Strict):
    """`points` points for every full `per_amount` minor units spent (rounded down)."""

    points: int = Field(1, ge=0, le=1_000_000)
    per_amount: int = Field(100, gt=0, le=10**12, description="Minor units, e.g. 1000 = 10.00 SEK")


class ExpiryNever(Strict):
    kind: Literal["never"] = "never"


class ExpiryAfterMonths(Strict):
    """Each lot expires `months` after it was earned."""

    kind: Literal["after_months"]
    months: int = Field(gt=0, le=240)


class ExpiryEndOfYear(Strict):
    """Lots expire at the end of the calendar year (program time zone), `years_after` later."""

    kind: Literal["end_of_year"]
    years_after: int = Field(0, ge=0, le=20)


Expiry = Annotated[ExpiryNever | ExpiryAfterMonths | ExpiryEndOfYear, Field(discriminator="kind")]


class Rule(Strict):
    """One earning rule. Rules run in (priority, id) order, never in edit order."""

    id: str = Field(pattern=RULE_ID)
    name: str | None = Field(None, max_length=200)
    on: str = Field("purchase", pattern=EVENT_TYPE, description="purchase or an event type")
    priority: int = Field(100, ge=0, le=10_000)
    when: list[Clause] = Field(default_factory=list, max_length=20)
    lines: LineFilter | None = None
    min_amount: int = Field(0, ge=0, description="qualifying amount needed, minor units")
    effect: Effect
    limits: Limits = Limits()
    group: str | None = Field(None, pattern=RULE_ID, description="best-of group")
    stop_after: bool = False
    active_from: date | None = None
    active_until: date | None = None
    vesting_days: int | None = Field(None, ge=0, le=365)
    expiry: Expiry | None = None


class StampCard(Strict):
    """After `stamps` stamps the member gets `reward_points`, or a voucher for `reward` (a
    catalogue id), and the card starts again."""

    id: str = Field(pattern=RULE_ID)
    name: str = Field(min_length=1, max_length=100)
    stamps: int = Field(gt=0, le=1000)
    reward_points: int = Field(0, ge=0, le=10**9)
    reward: str | None = Field(None, pattern=RULE_ID)

    @model_validator(mode="after")
    def _gives_something(self) -> StampCard:
        if (self.reward_points > 0) == (self.reward is not None):
            raise ValueError("a stamp card gives either reward_points or a reward")
        return self
