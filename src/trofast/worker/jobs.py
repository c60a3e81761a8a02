"""Idempotent jobs. Running one twice changes nothing: each lot moves at most once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from trofast.activities import service as activities
from trofast.kit.clock import Clock
from trofast.kit.db import Database
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import repository as member_reads
from trofast.memberships import service as memberships
from trofast.notify import expiry
from trofast.notify.outbox import raise_event
from trofast.programs import repository as program_reads
from trofast.programs import service as programs
from trofast.rewards import service as rewards
from trofast.rules import engine
from trofast.tiers import service as tiers

CHUNK = 500
#: A birthday missed while the worker was down is still granted within this many days.
BIRTHDAY_WINDOW_DAYS = 7


@dataclass
class JobReport:
    vested: int = 0
    expired: int = 0
    birthdays: int = 0
    #: `points.expiring` events raised. Left out of equality: a report compares as the
    #: ledger moves it made (vested, expired), which is what the ledger tests pin down.
    expiry_warnings: int = field(default=0, compare=False)
    #: Unused vouchers past their end, marked expired.
    vouchers_expired: int = field(default=0, compare=False)
    #: Members moved down (or into their grace days) by the tier period-end review.
    tier_changes: int = field(default=0, compare=False)
    #: Paid memberships that ended (paid period and grace over, or cancelled) and lapsed.
    memberships_lapsed: int = field(default=0, compare=False)


def run_due(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> JobReport:
    """Vest and then expire every due lot of every program (or of `program_ids`), in chunks
    of one transaction each, then grant birthdays and raise expiry warnings."""
    report = JobReport()
    now = clock.now()
    if program_ids is None:
        program_ids = _all_programs(db)
    for program_id in program_ids:
        ctx = ledger.Context(program_id, now, "job")
        report.vested += _drain(db, ctx, ledger_reads.due_for_vesting, ledger.vest_many)
        report.expired += _drain(db, ctx, ledger_reads.due_for_expiry, _expire_each)
    report.birthdays = grant_birthdays(db, clock, program_ids)
    report.expiry_warnings = warn_expiring(db, clock, program_ids)
    report.vouchers_expired = expire_vouchers(db, clock, program_ids)
    report.tier_changes = review_tiers(db, clock, program_ids)
    report.memberships_lapsed = lapse_memberships(db, clock, program_ids)
    return report


def lapse_memberships(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> int:
    """Record the lapse of every paid membership whose paid period and grace (or, once
    cancelled, paid period) ended, one transaction per chunk; how many lapsed."""
    now = clock.now()
    lapsed = 0
    for program_id in _all_programs(db) if program_ids is None else program_ids:
        with db.read() as conn:  # the write lock only when some membership is due
            if not memberships.any_due(conn, program_id, now):
                continue
        while True:
            with db.write() as conn:
                done = len(memberships.lapse_due(conn, program_id, now))
            lapsed += done
            if done < memberships.LAPSE_CHUNK:
                break
    return lapsed


def review_tiers(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> int:
    """The tier period-end review of every member whose period (and grace) ended, one
    transaction per chunk of member ids; how many members changed tier or entered grace."""
    now = clock.now()
    changed = 0
    for program_id in _all_programs(db) if program_ids is None else program_ids:
        with db.read() as conn:  # the write lock only when some member is due
            program = programs.current(conn, program_id)
            if not tiers.any_due(conn, program, now):
                continue
        after: int | None = 0
        while after is not None:
            with db.write() as conn:
                done, after = tiers.review(conn, program, now, after)
            changed += len(done.changes)
    return changed


def expire_vouchers(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> int:
    """Mark unused vouchers past their end as expired; how many."""
    now = clock.now()
    done = 0
    for program_id in _all_programs(db) if program_ids is None else program_ids:
        with db.read() as conn:  # the write lock only when a voucher is due
            if not rewards.vouchers_due_to_expire(conn, program_id, now):
                continue
        with db.write() as conn:
            done += rewards.expire_vouchers(conn, program_id, now)
    return done


def _all_programs(db: Database) -> list[int]:
    with db.read() as conn:
        return [int(r.id) for r in program_reads.list_programs(conn)]


def _expire_each(conn: Connection, ctx: ledger.Context, lot_ids: Sequence[int]) -> int:
    return sum(1 for lot_id in lot_ids if ledger.post(conn, ctx, ledger.Expire(lot_id)))


def _drain(
    db: Database,
    ctx: ledger.Context,
    due: Callable[[Connection, int, datetime, int], list[int]],
    move: Callable[[Connection, ledger.Context, Sequence[int]], int],
) -> int:
    done = 0
    while True:
        with db.read() as conn:  # most rounds find nothing: no write lock for that
            if not due(conn, ctx.program_id, ctx.now, 1):
                return done
        with db.write() as conn:
            lot_ids = due(conn, ctx.program_id, ctx.now, CHUNK)
            done += move(conn, ctx, lot_ids)
        if len(lot_ids) < CHUNK:
            return done


def grant_birthdays(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> int:
    """Record a `birthday` event for members whose birthday fell in the last week (program
    time zone), in programs with birthday rules; once per member and year."""
    now = clock.now()
    granted = 0
    for program_id in _all_programs(db) if program_ids is None else program_ids:
        with db.read() as conn:  # the write lock only for programs with birthdays due
            program = programs.current(conn, program_id)
            if "birthday" not in engine.compile_program(program.spec).by_trigger:
                continue
            today = now.astimezone(program.spec.zone).date()
            days = [today - timedelta(days=n) for n in range(BIRTHDAY_WINDOW_DAYS)]
            due = member_reads.birthdays_on(conn, program_id, days)
        if not due:
            continue
        with db.write() as conn:
            for member_id, birthday in due:
                external_id = f"birthday:{member_id}:{birthday.year}"
                result = activities.member_event(
                    conn, program, member_id, "birthday", external_id, now, "job"
                )
                granted += result is not None
    return granted


def warn_expiring(db: Database, clock: Clock, program_ids: Sequence[int] | None = None) -> int:
    """Raise a `points.expiring` outbox event per member and expiry day (program zone)
    inside a program's `expiry_warning_days` windows, once per day and window; how many.

    Reads first (every run re-reads the lots in the widest window) and takes the write
    lock only when some warning is not in the outbox yet; the keys make a rerun a no-op.
    """
    now = clock.now()
    raised = 0
    for program_id in _all_programs(db) if program_ids is None else program_ids:
        with db.read() as conn:
            program = programs.current(conn, program_id)
            due = expiry.unraised(conn, program_id, expiry.warnings_due(conn, program, now))
        if not due:
            continue
        with db.write() as conn:
            for warning in due:
                raised += raise_event(
                    conn, program_id, expiry.TOPIC, warning.key, warning.payload, now
                )
    return raised
