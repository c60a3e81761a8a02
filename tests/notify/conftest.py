"""Fixtures of the outbox and expiry-warning tests: members with points lots of a chosen
expiry, posted through the ledger service (the only writer of points)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

import pytest

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.idempotency import request_hash
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.programs.service import ProgramVersion

_serial = itertools.count(1)


@pytest.fixture
def member_of(db: Database, clock: FixedClock) -> Callable[[ProgramVersion], int]:
    """Enrol a member in `program`; its id."""

    def enrol(program: ProgramVersion) -> int:
        with db.write() as conn:
            email = f"n{next(_serial)}@example.com"
            return members.enrol(conn, program, MemberIn(email=email), clock.now()).id

    return enrol


@pytest.fixture
def grant(db: Database, clock: FixedClock) -> Callable[..., None]:
    """Give a member a lot of `points` expiring at `expires_at` (an admin adjustment)."""

    def give(program: ProgramVersion, member_id: int, points: int, expires_at: datetime) -> None:
        reference = f"grant-{next(_serial)}"
        with db.write() as conn:
            row = members.resolve_with_account(conn, program.program_id, member_id=member_id)
            ctx = ledger.Context(program.program_id, clock.now(), "test", program.version)
            ledger.post(
                conn,
                ctx,
                ledger.Adjust(
                    member_id,
                    int(row.account_id),
                    points,
                    "test lot",
                    f"adjust:{reference}",
                    request_hash(member_id, points, reference),
                    expires_at,
                ),
            )

    return give
