"""The program document (program-as-code), validated by Pydantic.

A document is YAML or JSON; `trofast program apply FILE` stores it as a new immutable
version. Every field is documented in docs/program-file.md.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trofast.memberships.document import MembershipPlan, MembershipPlans, check_plans
from trofast.partners.document import Partner, check_partners
from trofast.rewards.document import PayWithPoints, Reward
from trofast.rules.document import (
    BUILT_IN_EVENTS,
    EVENT_TYPE,
    Cashback,
    EarnRate,
    Expiry,
    ExpiryNever,
    GrantReward,
    Multiplier,
    Rule,
    Stamp,
    StampCard,
)
from trofast.tiers.document import Tier, TierQualification, Tiers, check_tiers

KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
ISO_4217 = re.compile(r"^[A-Z]{3}$")

#: Digits after the decimal point per currency; anything not listed has 2.
CURRENCY_EXPONENTS = {"JPY": 0, "ISK": 0, "KRW": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NegativeBalance(StrEnum):
    """What a return does when the points it takes back were already spent.

    `forbid` (write off): take back what is there; the rest is recorded as uncollected.
    `allow` (allow negative): take back what is there; the member owes the rest, the balance
    goes negative and future points pay the debt first.
    `deduct` (deduct from future earnings): take back only what is left of the purchase's
    own points; the rest is withheld from the member's next earnings, while the points the
    member has now stay spendable.
    """

    forbid = "forbid"
    allow = "allow"
    deduct = "deduct"


class TransferPolicy(Strict):
    """Whether and how members may give points to each other."""

    enabled: bool = False
    household_only: bool = Field(False, description="Only between members of one household")
    min_points: int = Field(1, ge=1, description="Smallest transfer")
    max_points_per_transfer: int | None = Field(None, ge=1)
    max_points_per_month: int | None = Field(
        None, ge=1, description="Points a member may send per calendar month (program zone)"
    )


class ProgramSpec(Strict):
    """One version of a loyalty program."""

    key: str = Field(pattern=KEY_PATTERN, description="Stable identifier, e.g. 'kaffe'")
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(description="ISO 4217 code of all amounts, e.g. SEK")
    timezone: str = Field("UTC", description="IANA zone that decides days and years")
    country: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="Default region for phone numbers, e.g. SE"
    )
    locales: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    point_name: str = Field("points", min_length=1, max_length=40)
    point_value: int = Field(
        0, ge=0, description="Money value of one point in 1/100 minor units (for liability)"
    )
    earn: EarnRate = EarnRate()
    vesting_days: int = Field(0, ge=0, le=365, description="Days before earned points can be spent")
    expiry: Expiry = ExpiryNever()
    negative_balance: NegativeBalance = NegativeBalance.forbid
    transfers: TransferPolicy = TransferPolicy()
    expiry_warning_days: list[Annotated[int, Field(ge=1, le=365)]] = Field(
        default_factory=lambda: [30],
        max_length=5,
        description="Days before points expire when members are warned (an outbox event)",
    )
    event_types: list[Annotated[str, Field(pattern=EVENT_TYPE)]] = Field(
        default_factory=list, max_length=100, description="Custom event types, besides built-ins"
    )
    rules: list[Rule] | None = Field(
        None,
        max_length=500,
        description="Earning rules; absent means one rule: `earn` on purchases",
    )
    stamp_cards: list[StampCard] = Field(default_factory=list, max_length=50)
    rewards: list[Reward] = Field(default_factory=list, max_length=1000)
    pay_with_points: PayWithPoints = PayWithPoints()
    tiers: Tiers = Field(default_factory=list, description="Ordered; the first is the entry tier")
    tier_qualification: TierQualification = TierQualification()
    partners: list[Partner] = Field(
        default_factory=list, max_length=500, description="Coalition partners (docs/partners.md)"
    )
    membership_plans: MembershipPlans = Field(
        default_factory=list, description="Paid memberships (docs/memberships.md)"
    )

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> ProgramSpec:
        rules = self.rules or []
        for field, ids in (
            ("rules", [rule.id for rule in rules]),
            ("stamp_cards", [card.id for card in self.stamp_cards]),
            ("rewards", [reward.id for reward in self.rewards]),
        ):
            for index, item_id in enumerate(ids):
                if item_id in ids[:index]:
                    raise ValueError(f"{field}.{index}.id: {item_id!r} is used twice")
        cards = {card.id for card in self.stamp_cards}
        events = {"purchase", *BUILT_IN_EVENTS, *self.event_types}
        order = {rule.id: (rule.priority, rule.id) for rule in rules}
        by_id = {rule.id: rule for rule in rules}
        group_start: dict[str, tuple[int, str]] = {}
        for rule in rules:
            if rule.group is not None:
                group_start[rule.group] = min(
                    order[rule.id], group_start.get(rule.group, order[rule.id])
                )
        for index, rule in enumerate(rules):
            where = f"rules.{index}"
            if rule.on not in events:
                raise ValueError(
                    f"{where}.on: unknown event type {rule.on!r}; declare it in event_types"
                )
            for n, clause in enumerate(rule.when):
                if clause.field.startswith("line."):
                    raise ValueError(f"{where}.when.{n}.field: line fields belong in lines.when")
            effect = rule.effect
            if isinstance(effect, Multiplier):
                for target in effect.of:
                    if target not in order:
                        raise ValueError(f"{where}.effect.of: no rule {target!r}")
                    if isinstance(by_id[target].effect, Cashback | Stamp | GrantReward):
                        raise ValueError(
                            f"{where}.effect.of: {target!r} gives no points to multiply"
                        )
                    if order[target] >= order[rule.id]:
                        raise ValueError(
                            f"{where}.effect.of: {target!r} must run before {rule.id!r} "
                            "(lower priority number)"
                        )
                    # A best-of group is decided where its first rule runs.
                    if rule.group is not None and order[target] >= group_start[rule.group]:
                        raise ValueError(
                            f"{where}.effect.of: {target!r} must run before every rule of "
                            f"group {rule.group!r} (lower priority number)"
                        )
            if (
                isinstance(effect, Multiplier)
                and effect.by is not None
                and not (self.tiers if effect.by == "tier" else self.membership_plans)
            ):
                what = "tiers" if effect.by == "tier" else "membership_plans"
                raise ValueError(f"{where}.effect.by: the program has no {what}")
            if isinstance(effect, Stamp) and effect.card not in cards:
                raise ValueError(f"{where}.effect.card: no stamp card {effect.card!r}")
            if isinstance(effect, GrantReward) and self.reward(effect.reward) is None:
                raise ValueError(f"{where}.effect.reward: no reward {effect.reward!r}")
            if rule.active_from and rule.active_until and rule.active_from > rule.active_until:
                raise ValueError(f"{where}: active_from is after active_until")
        for index, card in enumerate(self.stamp_cards):
            if card.reward is not None and self.reward(card.reward) is None:
                raise ValueError(f"stamp_cards.{index}.reward: no reward {card.reward!r}")
        for index, reward in enumerate(self.rewards):
            start, end = reward.available_from, reward.available_until
            if start and end and start >= end:
                raise ValueError(f"rewards.{index}: available_from is not before available_until")
            if not reward.channels:
                raise ValueError(f"rewards.{index}.channels: name at least one channel")
        check_tiers(self.tiers, self.tier_qualification, events)
        tier_ids = {tier.id for tier in self.tiers}
        for index, card in enumerate(self.stamp_cards):
            if card.reward is not None and self.reward(card.reward) is None:
                raise ValueError(f"stamp_cards.{index}.reward: no reward {card.reward!r}")
        for index, reward in enumerate(self.rewards):
            for n, tier_id in enumerate(reward.eligible.tiers):
                if self.tiers and tier_id not in tier_ids:
                    raise ValueError(f"rewards.{index}.eligible.tiers.{n}: no tier {tier_id!r}")
        check_plans(self.membership_plans, {reward.id for reward in self.rewards})
        if self.rules is not None and not (info.context or {}).get("stored"):
            _multipliers_paid(self.rules, self.tiers, self.membership_plans)
        check_partners(self.partners, [(i, r.partner) for i, r in enumerate(self.rewards)])
        return self

    def tier(self, tier_id: str | None) -> Tier | None:
        """The tier `tier_id`, if this version has it."""
        return next((t for t in self.tiers if t.id == tier_id), None)

    def partner(self, partner_id: str | None) -> Partner | None:
        """The partner `partner_id`, if this version has it."""
        return next((p for p in self.partners if p.id == partner_id), None)

    def reward(self, reward_id: str) -> Reward | None:
        """The catalogue entry `reward_id`, if this version offers it."""
        return next((r for r in self.rewards if r.id == reward_id), None)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not ISO_4217.match(value):
            raise ValueError("must be a three-letter ISO 4217 code such as SEK")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _multipliers_paid(rules: list[Rule], tiers: list[Tier], plans: list[MembershipPlan]) -> None:
    """A tier or plan that promises an earn multiplier needs a rule that pays it (a
    `multiplier` effect `by: tier` or `by: plan`): a percent is never display-only."""
    paid = {r.effect.by for r in rules if isinstance(r.effect, Multiplier)}
    promised: tuple[tuple[str, str, list[int]], ...] = (
        ("tiers", "tier", [tier.earn_multiplier_percent for tier in tiers]),
        ("membership_plans", "plan", [plan.earn_multiplier_percent for plan in plans]),
    )
    for field, by, percents in promised:
        if by in paid:
            continue
        for index, percent in enumerate(percents):
            if percent != 100:
                raise ValueError(
                    f"{field}.{index}.earn_multiplier_percent: no rule pays it; add a rule "
                    f"with effect {{kind: multiplier, by: {by}, of: [...]}}"
                )


class SpecError(Exception):
    """A document that is not a valid program; `errors` lists (path, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in errors))
        self.errors = errors


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as version 1.2 reads booleans: only true/false, so `on: signup` stays a key."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def parse_document(text: str) -> ProgramSpec:
    """Parse YAML or JSON text into a ProgramSpec, or raise SpecError with every error."""
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        raise SpecError([("(document)", f"not valid YAML/JSON: {exc}")]) from None
    return validate_data(data)


def validate_data(data: Any, *, stored: bool = False) -> ProgramSpec:
    """A ProgramSpec, or SpecError with every error. `stored`: a version applied before, read
    back; checks added since it was applied (an earn multiplier no rule pays) are skipped."""
    if not isinstance(data, dict):
        raise SpecError([("(document)", "must be a mapping of fields")])
    try:
        return ProgramSpec.model_validate(data, context={"stored": stored})
    except ValidationError as exc:
        raise SpecError([_located(err) for err in exc.errors()]) from None


def _located(err: Any) -> tuple[str, str]:
    """(path, reason) of a validation error; cross-field checks name their path themselves."""
    path = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    if not path and ": " in message and " " not in message.split(": ", 1)[0]:
        path, message = message.split(": ", 1)
    return path or "(document)", message
