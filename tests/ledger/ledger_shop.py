"""`Shop`: a program, its clock and the service calls a till or an admin would make,
shared by the ledger tests (the `shop_for` fixture in conftest.py makes one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import func, select

from trofast.activities import service as activities
from trofast.activities.schemas import ActivityIn, ActivityResult
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.idempotency import request_hash
from trofast.ledger import service as ledger
from trofast.ledger.audit import audit, system_balances
from trofast.ledger.models import ledger_transactions, lots
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.programs.service import ProgramVersion
from trofast.worker import jobs
from trofast.worker.jobs import JobReport

ACTIVITY = TypeAdapter(ActivityIn)


class Shop:
    """A program, its clock and the service calls a till or an admin would make."""

    def __init__(self, db: Database, clock: FixedClock, program: ProgramVersion) -> None:
        self.db, self.clock, self.program = db, clock, program
        self.pid = program.program_id
        self._members = 0

    # -- members and activities
    def enrol(self) -> tuple[int, int]:
        self._members += 1
        with self.db.write() as conn:
            out = members.enrol(
                conn,
                self.program,
                MemberIn(email=f"m{self._members}@example.com"),
                self.clock.now(),
            )
            row = members.resolve_with_account(conn, self.pid, member_id=out.id)
        return out.id, int(row.account_id)

    def ingest(self, body: dict[str, Any]) -> ActivityResult:
        with self.db.write() as conn:
            return activities.ingest(
                conn, self.program, ACTIVITY.validate_python(body), self.clock.now(), "test"
            )

    def purchase(self, member_id: int, external_id: str, amount: int) -> ActivityResult:
        return self.ingest(
            {
                "type": "purchase",
                "external_id": external_id,
                "member_id": member_id,
                "amount": amount,
                "currency": "SEK",
            }
        )

    def ret(self, external_id: str, original: str, amount: int | None = None) -> ActivityResult:
        body: dict[str, Any] = {
            "type": "return",
            "external_id": external_id,
            "original_external_id": original,
        }
        if amount is not None:
            body["amount"] = amount
        return self.ingest(body)

    # -- ledger operations
    def _post(self, op: ledger.Operation) -> ledger.Posted:
        with self.db.write() as conn:
            ctx = ledger.Context(self.pid, self.clock.now(), "test", self.program.version)
            posted = ledger.post(conn, ctx, op)
        assert posted is not None
        return posted

    def spend(self, member: tuple[int, int], points: int, reference: str) -> ledger.Posted:
        return self._post(
            ledger.Spend(
                member[0],
                member[1],
                points,
                reference,
                f"spend:{reference}",
                request_hash(member[0], points),
            )
        )

    def adjust(
        self,
        member: tuple[int, int],
        points: int,
        reason: str,
        reference: str,
        expires_at: datetime | None = None,
    ) -> ledger.Posted:
        return self._post(
            ledger.Adjust(
                member[0],
                member[1],
                points,
                reason,
                f"adjust:{reference}",
                request_hash(member[0], points, reason),
                expires_at,
            )
        )

    def run_jobs(self) -> JobReport:
        return jobs.run_due(self.db, self.clock, [self.pid])

    # -- reading back
    def balance(self, member: tuple[int, int]) -> dict[str, int]:
        with self.db.read() as conn:
            return ledger.member_balance(conn, member[1], self.clock.now())

    def lots(self, member: tuple[int, int]) -> list[Any]:
        with self.db.read() as conn:
            return list(
                conn.execute(
                    select(lots).where(lots.c.account_id == member[1]).order_by(lots.c.id)
                ).all()
            )

    def transaction_count(self) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(ledger_transactions)
                    .where(ledger_transactions.c.program_id == self.pid)
                ).scalar_one()
            )

    def audit(self) -> list[str]:
        with self.db.read() as conn:
            return audit(conn, self.pid)

    def system(self) -> dict[str, int]:
        with self.db.read() as conn:
            return system_balances(conn, self.pid)


def figures(balance: dict[str, int]) -> tuple[int, int, int]:
    return balance["available"], balance["pending"], balance["debt"]
