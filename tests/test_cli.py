"""The `trofast` CLI: program validate/apply, API keys, against both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

from typer.testing import CliRunner

from trofast.cli import app
from trofast.kit.db import Database
from trofast.programs import service as programs

runner = CliRunner()


def _document(key: str, **overrides: str) -> str:
    fields = {
        "key": key,
        "name": "CLI café",
        "currency": "SEK",
        "timezone": "Europe/Stockholm",
        **overrides,
    }
    return (
        "\n".join(f"{k}: {v}" for k, v in fields.items())
        + "\nearn: {points: 1, per_amount: 1000}\n"
    )


def test_validate_reports_every_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "key: Bad Key\nname: x\ncurrency: sek\ntimezone: Mars/Olympus\n"
        "earn: {points: -1, per_amount: 0}\nexpiry: {kind: after_months}\nsurprise: 1\n"
    )
    result = runner.invoke(app, ["program", "validate", str(bad)])
    assert result.exit_code == 1
    out = result.output
    for path in (
        "key",
        "currency",
        "timezone",
        "earn.points",
        "earn.per_amount",
        "expiry.after_months.months",
        "surprise",
    ):
        assert f": {path}: " in out, (path, out)


def test_validate_accepts_a_good_document(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(_document("good-one"))
    result = runner.invoke(app, ["program", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_apply_creates_immutable_versions_and_keys(db: Database, tmp_path: Path) -> None:
    key = f"cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "p.yaml"
    path.write_text(_document(key))
    url = db.url
    first = runner.invoke(app, ["program", "apply", str(path), "--db", url])
    assert first.exit_code == 0, first.output
    path.write_text(_document(key, name="'CLI café, renamed'"))
    second = runner.invoke(app, ["program", "apply", str(path), "--db", url])
    assert "version 2" in second.output, second.output
    with db.read() as conn:
        current = programs.by_key(conn, key)
        first_version = programs.load_version(conn, current.program_id, 1)
    assert current.version == 2 and current.spec.name == "CLI café, renamed"
    assert first_version.spec.name == "CLI café"

    changed_currency = tmp_path / "eur.yaml"
    changed_currency.write_text(_document(key, currency="EUR"))
    refused = runner.invoke(app, ["program", "apply", str(changed_currency), "--db", url])
    assert refused.exit_code != 0

    created = runner.invoke(
        app, ["apikey", "create", "--program", key, "--scope", "read", "--db", url]
    )
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("tf_")


def test_apikey_for_unknown_program_fails(db: Database) -> None:
    result = runner.invoke(
        app, ["apikey", "create", "--program", "no-such-program", "--scope", "pos", "--db", db.url]
    )
    assert result.exit_code != 0


def test_import_gift_card_codes_from_a_providers_csv(db: Database, tmp_path: Path) -> None:
    key = f"cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "p.yaml"
    path.write_text(_document(key))
    assert runner.invoke(app, ["program", "apply", str(path), "--db", db.url]).exit_code == 0
    csv_file = tmp_path / "codes.csv"
    csv_file.write_text("code,value\nGC-0001,500\nGC-0002,500\n\nGC-0001,500\n")
    command = ["rewards", "import-codes", str(csv_file), "--program", key, "--pool", "gc500"]
    result = runner.invoke(app, [*command, "--header", "--db", db.url])
    assert result.exit_code == 0, result.output
    assert "2 codes added, 1 already there, 2 available" in result.output
    again = runner.invoke(app, [*command, "--header", "--db", db.url])
    assert "0 codes added, 3 already there, 2 available" in again.output
