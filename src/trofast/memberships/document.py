"""The paid-memberships part of the program document: `membership_plans:`.

A plan is something members pay for through the business's payment provider (monthly or
yearly, optionally after a free trial) and that grants benefits like a tier: perks, an
earn multiplier (paid by a `multiplier` rule `by: plan`), and rewards only its members
may redeem. Documented with an example in docs/memberships.md.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from trofast.rewards.document import Text
from trofast.tiers.document import PERK

PLAN_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REWARD_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Period(StrEnum):
    """How long one paid period runs (calendar months in the program's time zone)."""

    monthly = "monthly"
    yearly = "yearly"

    @property
    def months(self) -> int:
        return 1 if self is Period.monthly else 12


class MembershipPlan(BaseModel):
    """One paid plan and the benefits its members have while the membership runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PLAN_ID, description="Stable id; payments name it as `plan`")
    name: Text
    price: int = Field(ge=0, le=10**11, description="Fee per period, minor units")
    period: Period
    trial_days: int = Field(
        0, ge=0, le=365, description="Free days before the first paid period (once per member)"
    )
    grace_days: int = Field(
        0, ge=0, le=365, description="Days the membership still runs after a missed payment"
    )
    perks: list[Annotated[str, Field(pattern=PERK)]] = Field(default_factory=list, max_length=20)
    earn_multiplier_percent: int = Field(
        100, ge=100, le=1000, description="Paid by a multiplier rule with `by: plan`"
    )
    rewards: list[Annotated[str, Field(pattern=REWARD_ID)]] = Field(
        default_factory=list, max_length=200, description="Rewards only members may redeem"
    )


MembershipPlans = Annotated[list[MembershipPlan], Field(max_length=50)]


def check_plans(plans: list[MembershipPlan], reward_ids: set[str]) -> None:
    """Cross-checks of the plans; raises ValueError naming the path of the first problem."""
    ids = [plan.id for plan in plans]
    for index, plan_id in enumerate(ids):
        if plan_id in ids[:index]:
            raise ValueError(f"membership_plans.{index}.id: {plan_id!r} is used twice")
    for index, plan in enumerate(plans):
        for n, reward_id in enumerate(plan.rewards):
            if reward_id not in reward_ids:
                raise ValueError(f"membership_plans.{index}.rewards.{n}: no reward {reward_id!r}")
            if reward_id in plan.rewards[:n]:
                raise ValueError(
                    f"membership_plans.{index}.rewards.{n}: {reward_id!r} is named twice"
                )
        for n, perk in enumerate(plan.perks):
            if perk in plan.perks[:n]:
                raise ValueError(f"membership_plans.{index}.perks.{n}: {perk!r} is named twice")


def plan_of(plans: list[MembershipPlan], plan_id: str | None) -> MembershipPlan | None:
    """The plan `plan_id`, if the program (version) has it."""
    return next((p for p in plans if p.id == plan_id), None)
