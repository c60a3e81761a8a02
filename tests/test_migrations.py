"""Alembic migrations from an empty database produce exactly the models' schema."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import pgserver
from trofast import migrations
from trofast.models import metadata

SRC = Path(__file__).parents[1] / "src" / "trofast"
LEDGER_TABLES = {"accounts", "ledger_transactions", "transfers", "lots"}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_from_empty_match_models(
    dialect: str, tmp_path: Path, postgres_url: str
) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = pgserver.create_database(postgres_url, f"empty_{uuid.uuid4().hex[:12]}")
    migrations.upgrade(url)
    migrations.upgrade(url)  # a second upgrade is a no-op
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []
    assert {t for t in metadata.tables} >= LEDGER_TABLES


def _ledger_writes(tree: ast.AST) -> list[int]:
    """Lines that call insert/update/delete on a ledger table: `t.insert()` or `update(t)`."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in {"insert", "update", "delete"}:
            continue
        targets = list(node.args)
        if isinstance(func, ast.Attribute):
            targets.append(func.value)
        if any(isinstance(t, ast.Name) and t.id in LEDGER_TABLES for t in targets):
            lines.append(node.lineno)
    return lines


def test_only_the_ledger_service_writes_ledger_tables() -> None:
    """DESIGN rule 2: `ledger.service` is the only writer of the ledger tables."""
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative == "ledger/service.py" or relative.startswith("migrations/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{relative}:{line}" for line in _ledger_writes(tree)]
    assert offenders == []
    service = ast.parse((SRC / "ledger" / "service.py").read_text(encoding="utf-8"))
    assert _ledger_writes(service), "the check must see the writes that do exist"
