"""The `trofast` command line."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer
from rich.console import Console

from trofast.config import Settings
from trofast.kit.auth import Scope
from trofast.kit.clock import SystemClock
from trofast.kit.db import Database, connect
from trofast.programs.spec import ProgramSpec, SpecError, parse_document

app = typer.Typer(help="Trofast loyalty platform.", no_args_is_help=True)
program_app = typer.Typer(help="Program documents.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
ledger_app = typer.Typer(help="The points ledger.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(program_app, name="program")
app.add_typer(apikey_app, name="apikey")
app.add_typer(ledger_app, name="ledger")
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(None, "--db", help="Database URL (default: $TROFAST_DATABASE_URL)")


def _database(url: str | None) -> Database:
    from trofast import migrations

    settings = Settings()
    resolved = url or settings.database_url
    migrations.upgrade(resolved)
    return connect(resolved, pool_size=settings.pool_size)


def _read_program(file: Path) -> ProgramSpec:
    """Parse a program file or exit 1, printing each error as `file: path: reason`."""
    try:
        return parse_document(file.read_text(encoding="utf-8"))
    except SpecError as exc:
        for path, reason in exc.errors:
            typer.echo(f"{file}: {path}: {reason}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"{file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(db: str | None = DbOption) -> None:
    """Bring the database schema up to date."""
    _database(db).dispose()
    console.print("[green]Schema is up to date.[/green]")


@program_app.command("validate")
def program_validate(file: Path) -> None:
    """Check a program file; print every error with its path in the document."""
    spec = _read_program(file)
    console.print(f"[green]{file}: program '{spec.key}' is valid.[/green]")


@program_app.command("apply")
def program_apply(file: Path, db: str | None = DbOption) -> None:
    """Store a program file as the program's next version (creating the program if new)."""
    from trofast.programs import service

    spec = _read_program(file)
    database = _database(db)
    with database.write() as conn:
        version = service.apply(conn, spec, SystemClock().now())
    console.print(f"Program '{spec.key}' is now at version {version.version}.")


@apikey_app.command("create")
def apikey_create(
    program: str = typer.Option(..., help="Program key"),
    scope: Scope = typer.Option(..., help="admin, pos or read"),
    name: str = typer.Option("cli", help="A label for the key"),
    db: str | None = DbOption,
) -> None:
    """Create an API key; its secret is printed once and stored only hashed."""
    from trofast.access import service as access
    from trofast.programs import service as programs

    database = _database(db)
    with database.write() as conn:
        found = programs.by_key(conn, program)
        token, key_id = access.create_key(conn, found.program_id, scope, name, SystemClock().now())
    console.print(f"API key {key_id} ({scope.value}) for program '{program}':")
    print(token)


@ledger_app.command("audit")
def ledger_audit(
    program: str | None = typer.Option(None, help="Only this program"), db: str | None = DbOption
) -> None:
    """Recompute every ledger invariant; exit 1 if any is violated."""
    from trofast.ledger.audit import audit
    from trofast.programs import service as programs

    database = _database(db)
    with database.read() as conn:
        program_id = programs.by_key(conn, program).program_id if program else None
        problems = audit(conn, program_id)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        err.print(f"[red]{len(problems)} invariant violation(s).[/red]")
        raise typer.Exit(1)
    console.print("[green]Ledger is sound: every invariant holds.[/green]")


@app.command()
def worker(
    db: str | None = DbOption,
    once: bool = typer.Option(False, help="Run due jobs once and exit"),
    interval: float = typer.Option(30.0, help="Seconds between rounds"),
) -> None:
    """Run the vesting and expiry jobs (for deployments that run them separately)."""
    from trofast.worker.runner import Worker

    runner = Worker(_database(db), SystemClock(), interval)
    if once:
        report = runner.run_once()
        console.print(f"Vested {report.vested} lots, expired {report.expired} lots.")
        return
    console.print(f"Worker running every {interval:g} s; Ctrl-C to stop.")
    with contextlib.suppress(KeyboardInterrupt):
        runner.run_forever()


@app.command()
def serve(
    db: str | None = DbOption,
    host: str = "127.0.0.1",
    port: int = 8000,
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not run jobs in-process"),
) -> None:
    """Run the API (and, unless --no-worker, the job worker) in this process."""
    _serve(_database(db), host, port, run_worker=not no_worker)


def _serve(database: Database, host: str, port: int, *, run_worker: bool) -> None:
    import uvicorn

    from trofast.app import create_app

    settings = Settings()
    application = create_app(
        database, worker_interval=settings.worker_interval_seconds if run_worker else None
    )
    uvicorn.run(application, host=host, port=port, log_level="info")


@app.command()
def demo(
    path: Path = typer.Option(Path("demo.db"), help="SQLite file for the demo"),
    host: str = "127.0.0.1",
    port: int = 8000,
    members: int = typer.Option(1000, help="Members to generate"),
    purchases: int = typer.Option(50_000, help="Purchases to generate"),
    fresh: bool = typer.Option(False, help="Delete the demo file and generate it again"),
    no_serve: bool = typer.Option(False, "--no-serve", help="Only generate the data"),
) -> None:
    """Generate a demo café chain (deterministic) and serve it on http://HOST:PORT."""
    from trofast.demo import ensure_demo

    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    database = _database(f"sqlite:///{path}")
    keys = ensure_demo(database, members=members, purchases=purchases, console=console)
    base = f"http://{host}:{port}"
    console.print(f"\n[bold]Trofast demo[/bold] on {base}")
    console.print(f"  API docs:      {base}/docs")
    console.print(f"  OpenAPI:       {base}/openapi.json")
    for scope, token in keys.items():
        console.print(f"  {scope:<5} key:     {token}")
    console.print(f"  try:  curl -H 'Authorization: Bearer {keys['read']}' {base}/v1/members\n")
    if not no_serve:
        _serve(database, host, port, run_worker=True)


def main() -> None:  # pragma: no cover
    sys.exit(app())
