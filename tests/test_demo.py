"""The demo generator: realistic, sound and deterministic, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import Connection, func, select
from typer.testing import CliRunner

from trofast import demo
from trofast.activities.models import activities
from trofast.cli import app
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.ledger.models import ledger_transactions, lots
from trofast.members.models import members
from trofast.programs import service as programs
from trofast.programs.spec import parse_document

MEMBERS = 30
PURCHASES = 800
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cafe.yaml"


@dataclass(frozen=True)
class Generated:
    db: Database
    program_ids: tuple[int, int]
    keys: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def generated(request: pytest.FixtureRequest, _databases: dict[str, Database]) -> Generated:
    """Two generations with the same arguments into two fresh program keys."""
    db = _databases[request.param]
    quiet = Console(quiet=True)
    ids = []
    keys: dict[str, str] = {}
    for _ in range(2):
        key = f"kk-{uuid.uuid4().hex[:12]}"
        keys = demo.ensure_demo(
            db, members=MEMBERS, purchases=PURCHASES, console=quiet, program_key=key
        )
        with db.read() as conn:
            ids.append(programs.by_key(conn, key).program_id)
    return Generated(db, (ids[0], ids[1]), keys)


def _count(conn: Connection, table: Any, program_id: int, *where: Any) -> int:
    stmt = select(func.count()).select_from(table).where(table.c.program_id == program_id, *where)
    return int(conn.execute(stmt).scalar_one())


def test_example_file_is_the_embedded_document() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == demo.PROGRAM_DOCUMENT
    spec = parse_document(demo.PROGRAM_DOCUMENT)
    assert (spec.key, spec.currency, spec.timezone, spec.country) == (
        "kaffekoppen",
        "SEK",
        "Europe/Stockholm",
        "SE",
    )
    assert spec.earn.per_amount == 1000 and spec.vesting_days == 14
    assert 100 * spec.point_value == 1000 * 100  # 100 bönor ≈ 10 SEK (1/100 öre per point)


def test_cli_validates_the_example() -> None:
    result = CliRunner().invoke(app, ["program", "validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output


def test_counts_are_as_asked(generated: Generated) -> None:
    program_id = generated.program_ids[0]
    with generated.db.read() as conn:
        assert _count(conn, members, program_id) == MEMBERS
        purchases = _count(conn, activities, program_id, activities.c.type == "purchase")
        returns = _count(conn, activities, program_id, activities.c.type == "return")
        anonymous = _count(
            conn,
            activities,
            program_id,
            activities.c.type == "purchase",
            activities.c.member_id.is_(None),
        )
        spends = _count(
            conn, ledger_transactions, program_id, ledger_transactions.c.kind == "redeem"
        )
        last = conn.execute(
            select(func.max(activities.c.occurred_at)).where(activities.c.program_id == program_id)
        ).scalar_one()
    assert purchases == PURCHASES
    assert 0.01 * PURCHASES <= returns <= 0.03 * PURCHASES
    assert 0.10 * PURCHASES <= anonymous <= 0.20 * PURCHASES
    assert spends > 0
    assert last.replace(tzinfo=None) < demo.NOW.replace(tzinfo=None)


def test_ledger_is_sound_with_vested_and_expired_lots(generated: Generated) -> None:
    program_id = generated.program_ids[0]
    with generated.db.read() as conn:
        assert audit(conn, program_id) == []
        vested = _count(conn, lots, program_id, lots.c.pending.is_(False))
        pending = _count(conn, lots, program_id, lots.c.pending.is_(True))
        expired = _count(conn, lots, program_id, lots.c.expired > 0)
        reversed_ = _count(conn, lots, program_id, lots.c.reversed > 0)
    assert vested > pending > 0  # only the last 14 days are still pending
    assert expired > 0
    assert reversed_ > 0  # returns took points back


def test_two_generations_are_identical(generated: Generated) -> None:
    def snapshot(program_id: int) -> tuple[list[Any], list[Any]]:
        with generated.db.read() as conn:
            people = conn.execute(
                select(
                    members.c.first_name,
                    members.c.last_name,
                    members.c.email,
                    members.c.loyalty_number,
                    members.c.enrolled_at,
                )
                .where(members.c.program_id == program_id)
                .order_by(members.c.id)
            ).all()
            sales = conn.execute(
                select(
                    activities.c.external_id,
                    activities.c.type,
                    activities.c.amount,
                    activities.c.points,
                    activities.c.occurred_at,
                )
                .where(activities.c.program_id == program_id)
                .order_by(activities.c.id)
            ).all()
        return [tuple(r) for r in people], [tuple(r) for r in sales]

    first, second = (snapshot(program_id) for program_id in generated.program_ids)
    assert first == second
    assert len({number for *_, number, _ in first[0]}) == MEMBERS


def test_existing_demo_only_gets_new_keys(generated: Generated) -> None:
    with generated.db.read() as conn:
        key = programs.current(conn, generated.program_ids[1]).spec.key
        before = _count(conn, activities, generated.program_ids[1])
    keys = demo.ensure_demo(
        generated.db, members=5, purchases=5, console=Console(quiet=True), program_key=key
    )
    assert set(keys) == {"admin", "pos", "read"}
    assert not set(keys.values()) & set(generated.keys.values())
    with generated.db.read() as conn:
        assert _count(conn, activities, generated.program_ids[1]) == before
