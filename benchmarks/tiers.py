"""Benchmark: the tier period-end review of N members on a throwaway PostgreSQL.

Loads a program with three tiers (member, silver, gold by spend over the calendar year), N
members who all hold silver or gold secured through 2026, and their 2026 history (purchases,
returns and store visits; about half of them fall short), then times the review job as the
worker runs it on 1 January 2027 (`worker.jobs.review_tiers`), and once more to show a
second run finds nothing to do.

    .venv/bin/python benchmarks/tiers.py                  # 1 000 000 members
    .venv/bin/python benchmarks/tiers.py --members 50000

The data is generated inside PostgreSQL (INSERT ... SELECT over generate_series), so loading
a million members and their ten million activities takes a few minutes; only the review is
timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

import rawsql
from trofast import migrations
from trofast.kit.clock import FixedClock
from trofast.kit.db import connect
from trofast.programs import service as programs
from trofast.programs.spec import ProgramSpec
from trofast.tiers import service as tiers
from trofast.worker import jobs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pgserver

ZONE = ZoneInfo("Europe/Stockholm")
PROGRAM: dict[str, Any] = {
    "key": "bench-tiers",
    "name": "Benchmark tiers",
    "currency": "SEK",
    "timezone": "Europe/Stockholm",
    "tiers": [
        {"id": "member", "name": "Member"},
        {"id": "silver", "name": "Silver", "threshold": {"spend": 500_000}},
        {"id": "gold", "name": "Gold", "threshold": {"spend": 1_500_000}},
    ],
    "tier_qualification": {"metrics": ["spend"], "window": "calendar_year"},
}
YEAR_START = datetime(2026, 1, 1, tzinfo=ZONE)
YEAR_END = datetime(2027, 1, 1, tzinfo=ZONE)
REVIEW_AT = datetime(2027, 1, 1, 1, 0, tzinfo=ZONE).astimezone(UTC)


def load(url: str, count: int) -> int:
    """The program, `count` members with a tier secured through 2026, and their history."""
    migrations.upgrade(url)
    db = connect(url)
    try:
        with db.write() as conn:
            program = programs.apply(conn, ProgramSpec.model_validate(PROGRAM), REVIEW_AT)
    finally:
        db.dispose()
    pid = program.program_id
    params = {"pid": pid, "n": count, "start": YEAR_START, "end": YEAR_END}
    steps = [
        (
            "members",
            """INSERT INTO members (program_id, loyalty_number, email, tags, marketing_consent,
                   channel, status, enrolled_at, updated_at)
               SELECT %(pid)s, lpad(i::text, 12, '0'), 'm' || i || '@example.com', '[]',
                      false, 'store', 'active', %(start)s, %(start)s
               FROM generate_series(1, %(n)s) AS i""",
        ),
        (
            "member tiers",
            # A third gold, two thirds silver; all reviewed at the end of 2026.
            """INSERT INTO member_tiers (program_id, member_id, tier, since, period_start,
                   qualified_until, updated_at)
               SELECT %(pid)s, id, CASE WHEN id %% 3 = 0 THEN 'gold' ELSE 'silver' END,
                      %(start)s, %(start)s, %(end)s, %(start)s
               FROM members WHERE program_id = %(pid)s""",
        ),
        (
            "purchases",
            # 0 to 11 purchases a member over 2026, 200 to 3 000 SEK each.
            """INSERT INTO activities (program_id, external_id, type, member_id, occurred_at,
                   amount, currency, body, request_hash, program_version, points, result,
                   received_at)
               SELECT %(pid)s, 'p' || m.id || '-' || k, 'purchase', m.id,
                      %(start)s + (random() * interval '364 days'),
                      20000 + (random() * 280000)::bigint, 'SEK', '{}', '', 1, 0, '{}',
                      %(start)s
               FROM members m, generate_series(1, 11) AS k
               WHERE m.program_id = %(pid)s AND k <= (m.id * 7919) %% 12""",
        ),
        (
            "returns and visits",
            """INSERT INTO activities (program_id, external_id, type, member_id, occurred_at,
                   amount, event_type, body, request_hash, program_version, points, result,
                   received_at)
               SELECT %(pid)s, 'x' || m.id || '-' || k,
                      CASE WHEN k = 1 THEN 'return' ELSE 'event' END, m.id,
                      %(start)s + (random() * interval '364 days'),
                      CASE WHEN k = 1 THEN 10000 END,
                      CASE WHEN k = 1 THEN NULL ELSE 'store_visit' END,
                      '{}', '', 1, 0, '{}', %(start)s
               FROM members m, generate_series(1, 3) AS k
               WHERE m.program_id = %(pid)s""",
        ),
    ]
    with psycopg.connect(rawsql.libpq_url(url), autocommit=True) as conn:
        for name, sql in steps:
            began = time.perf_counter()
            rows = conn.execute(sql, params).rowcount
            print(f"  loaded {rows:>11,} {name} in {time.perf_counter() - began:6.1f} s")
        began = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"  VACUUM ANALYZE in {time.perf_counter() - began:.1f} s")
    return pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    args = parser.parse_args()
    with pgserver.throwaway_postgres() as server_url:
        url = pgserver.create_database(server_url, "bench_tiers")
        print(f"Loading {args.members:,} members on PostgreSQL ...")
        pid = load(url, args.members)
        db = connect(url)
        try:
            clock = FixedClock(REVIEW_AT)
            with db.read() as conn:
                before = dict(
                    conn.exec_driver_sql(
                        "SELECT tier, count(*) FROM member_tiers GROUP BY tier"
                    ).all()
                )
            began = time.perf_counter()
            changed = jobs.review_tiers(db, clock, [pid])
            first = time.perf_counter() - began
            began = time.perf_counter()
            again = jobs.review_tiers(db, clock, [pid])
            second = time.perf_counter() - began
            with db.read() as conn:
                after = dict(
                    conn.exec_driver_sql(
                        "SELECT tier, count(*) FROM member_tiers GROUP BY tier"
                    ).all()
                )
                events = conn.exec_driver_sql(
                    "SELECT count(*) FROM outbox WHERE topic = 'tier.changed'"
                ).scalar_one()
        finally:
            db.dispose()
    rate = args.members / first
    print(f"tiers before: {before}")
    print(f"tiers after:  {after}")
    print(
        f"review of {args.members:,} members: {first:.1f} s ({rate:,.0f} members/s), "
        f"{changed:,} moved down, {events:,} tier.changed events, "
        f"chunks of {tiers.REVIEW_CHUNK:,}"
    )
    print(f"second run: {second:.2f} s, {again} changes")


if __name__ == "__main__":
    main()
