"""Idempotent jobs. Running one twice changes nothing: each lot moves at most once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from trofast.kit.clock import Clock
from trofast.kit.db import Database
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.programs import repository as program_reads

CHUNK = 500


@dataclass
class JobReport:
    vested: int = 0
    expired: int = 0


def run_due(db: Database, clock: Clock) -> JobReport:
    """Vest and then expire every due lot of every program, in chunks of one transaction."""
    report = JobReport()
    now = clock.now()
    with db.read() as conn:
        program_ids = [int(r.id) for r in program_reads.list_programs(conn)]
    for program_id in program_ids:
        ctx = ledger.Context(program_id, now, "job")
        report.vested += _drain(db, ctx, ledger_reads.due_for_vesting, ledger.Vest)
        report.expired += _drain(db, ctx, ledger_reads.due_for_expiry, ledger.Expire)
    return report


def _drain(
    db: Database,
    ctx: ledger.Context,
    due: Callable[[Connection, int, datetime, int], list[int]],
    make: Callable[[int], ledger.Vest | ledger.Expire],
) -> int:
    done = 0
    while True:
        with db.write() as conn:
            lot_ids = due(conn, ctx.program_id, ctx.now, CHUNK)
            for lot_id in lot_ids:
                if ledger.post(conn, ctx, make(lot_id)) is not None:
                    done += 1
        if len(lot_ids) < CHUNK:
            return done
