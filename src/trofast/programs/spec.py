"""The program document (program-as-code), validated by Pydantic.

A document is YAML or JSON; `trofast program apply FILE` stores it as a new immutable
version. Every field is documented in docs/program-file.md.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
ISO_4217 = re.compile(r"^[A-Z]{3}$")

#: Digits after the decimal point per currency; anything not listed has 2.
CURRENCY_EXPONENTS = {"JPY": 0, "ISK": 0, "KRW": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class NegativeBalance(StrEnum):
    """What a return does when the points it takes back were already spent.

    `forbid`: take back what is there; the rest is recorded as uncollected.
    `allow`: the member owes the rest; future points pay the debt first.
    """

    forbid = "forbid"
    allow = "allow"


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


class SpecError(Exception):
    """A document that is not a valid program; `errors` lists (path, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in errors))
        self.errors = errors


def parse_document(text: str) -> ProgramSpec:
    """Parse YAML or JSON text into a ProgramSpec, or raise SpecError with every error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([("(document)", f"not valid YAML/JSON: {exc}")]) from None
    return validate_data(data)


def validate_data(data: Any) -> ProgramSpec:
    if not isinstance(data, dict):
        raise SpecError([("(document)", "must be a mapping of fields")])
    try:
        return ProgramSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(
            [
                (".".join(str(p) for p in err["loc"]) or "(document)", err["msg"])
                for err in exc.errors()
            ]
        ) from None
