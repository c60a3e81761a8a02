"""The `partners:` part of the program document: the other businesses of a coalition.

A partner earns points for the host program's members under its own rate and pays the
program `point_price` for every point it issues; the program pays it `redemption_price`
for every point redeemed at it (a voucher of a reward marked `partner: <id>`). Both prices
are in 1/100 minor units per point, like the program's `point_value`. Documented in
docs/partners.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trofast.rules.document import EarnRate

PARTNER_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PARTNER_ID, description="Stable identifier, e.g. 'hotel-nord'")
    name: str = Field(min_length=1, max_length=200)
    earn: EarnRate = Field(
        EarnRate(), description="Points per amount spent at the partner, like the program's"
    )
    point_price: int = Field(
        0, ge=0, le=10**9, description="What the partner pays per point it issues (1/100 minor)"
    )
    redemption_price: int = Field(
        0, ge=0, le=10**9, description="What the program pays per point redeemed at the partner"
    )


def check_partners(partners: list[Partner], reward_partners: list[tuple[int, str | None]]) -> None:
    """Partner ids are unique and every partner reward names a partner of the program."""
    ids = [p.id for p in partners]
    for index, partner_id in enumerate(ids):
        if partner_id in ids[:index]:
            raise ValueError(f"partners.{index}.id: {partner_id!r} is used twice")
    for index, named in reward_partners:
        if named is not None and named not in ids:
            raise ValueError(f"rewards.{index}.partner: no partner {named!r}")
