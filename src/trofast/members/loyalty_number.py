"""Loyalty numbers: 12 digits, the last a Luhn check digit, so typos at the till are caught."""

from __future__ import annotations

import random
import secrets

from stdnum import luhn
from stdnum.exceptions import ValidationError

LENGTH = 12


def generate(rng: random.Random | None = None) -> str:
    """A random number with a valid check digit; `rng` makes it deterministic (demo data)."""
    if rng is None:
        body = str(secrets.randbelow(9 * 10 ** (LENGTH - 2)) + 10 ** (LENGTH - 2))
    else:
        body = str(rng.randrange(10 ** (LENGTH - 2), 10 ** (LENGTH - 1)))
    return body + luhn.calc_check_digit(body)


def is_valid(number: str) -> bool:
    if len(number) != LENGTH or not number.isdigit():
        return False
    try:
        luhn.validate(number)
    except ValidationError:
        return False
    return True


def looks_like_number(ref: str) -> bool:
    """Whether a member reference is meant as a loyalty number (12 digits) rather than an id."""
    return len(ref) == LENGTH and ref.isdigit()
