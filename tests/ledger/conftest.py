"""Fixtures of the ledger tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ledger_shop import Shop

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion

MakeProgram = Callable[..., ProgramVersion]


@pytest.fixture
def shop_for(db: Database, clock: FixedClock, make_program: MakeProgram) -> Callable[..., Shop]:
    def make(**fields: Any) -> Shop:
        return Shop(db, clock, make_program(**fields))

    return make
