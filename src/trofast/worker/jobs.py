"""Idempotent jobs. Running one twice changes nothing: each lot moves at most once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from trofast.activities import service as activities
from trofast.kit.clock import Clock
from trofast.kit.db import Database
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import repository as member_reads
from trofast.programs import repository as program_reads
from trofast.programs import service as programs
from trofast.rules import engine

CHUNK = 500
#: A birthday missed while the worker was down is still granted within this many days.
BIRTHDAY_WINDOW_DAYS = 7


@dataclass
class JobReport:
    vested: int = 0
    expired: int = 0
    birthdays: int = 0


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
    report.birthdays = grant_birthdays(db, clock)
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


def grant_birthdays(db: Database, clock: Clock) -> int:
    """Record a `birthday` event for members whose birthday fell in the last week (program
    time zone), in programs with birthday rules; once per member and year."""
    now = clock.now()
    granted = 0
    with db.read() as conn:
        program_ids = [int(r.id) for r in program_reads.list_programs(conn)]
    for program_id in program_ids:
        with db.write() as conn:
            program = programs.current(conn, program_id)
            if "birthday" not in engine.compile_program(program.spec).by_trigger:
                continue
            today = now.astimezone(program.spec.zone).date()
            days = [today - timedelta(days=n) for n in range(BIRTHDAY_WINDOW_DAYS)]
            for member_id, birthday in member_reads.birthdays_on(conn, program_id, days):
                external_id = f"birthday:{member_id}:{birthday.year}"
                result = activities.member_event(
                    conn, program, member_id, "birthday", external_id, now, "job"
                )
                granted += result is not None
    return granted
