"""The `trofast` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console

from trofast.config import Settings
from trofast.kit.auth import Scope
from trofast.kit.clock import SystemClock
from trofast.kit.db import Database, connect
from trofast.programs.spec import ProgramSpec, SpecError, parse_document

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from trofast.programs.service import ProgramVersion

R = TypeVar("R")

app = typer.Typer(help="Trofast loyalty platform.", no_args_is_help=True)
program_app = typer.Typer(help="Program documents.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
ledger_app = typer.Typer(help="The points ledger.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
rules_app = typer.Typer(help="Try earning rules.", no_args_is_help=True)
rewards_app = typer.Typer(help="Rewards and gift-card code pools.", no_args_is_help=True)
report_app = typer.Typer(help="Reports.", no_args_is_help=True)
member_app = typer.Typer(help="A member's personal data (docs/privacy.md).", no_args_is_help=True)
app.add_typer(program_app, name="program")
app.add_typer(apikey_app, name="apikey")
app.add_typer(ledger_app, name="ledger")
app.add_typer(db_app, name="db")
app.add_typer(rules_app, name="rules")
app.add_typer(rewards_app, name="rewards")
app.add_typer(report_app, name="report")
app.add_typer(member_app, name="member")

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
    scope: Scope = typer.Option(..., help="admin, pos, read or partner"),
    name: str = typer.Option("cli", help="A label for the key"),
    partner: str | None = typer.Option(None, help="The partner id a partner key acts for"),
    db: str | None = DbOption,
) -> None:
    """Create an API key; its secret is printed once and stored only hashed."""
    from trofast.access import service as access
    from trofast.programs import service as programs

    if (scope is Scope.partner) != (partner is not None):
        typer.echo("A partner key needs --partner ID; other scopes take none.", err=True)
        raise typer.Exit(1)
    database = _database(db)
    with database.write() as conn:
        found = programs.by_key(conn, program)
        if partner is not None and found.spec.partner(partner) is None:
            typer.echo(f"Program '{program}' has no partner '{partner}'.", err=True)
            raise typer.Exit(1)
        token, key_id = access.create_key(
            conn, found.program_id, scope, name, SystemClock().now(), partner=partner
        )
    console.print(f"API key {key_id} ({scope.value}) for program '{program}':")
    print(token)


@rewards_app.command("import-codes")
def rewards_import_codes(
    file: Path = typer.Argument(..., help="CSV from the provider: the code in the first column"),
    program: str = typer.Option(..., help="Program key"),
    pool: str = typer.Option(..., help="Pool name, as a gift_card reward's `pool`"),
    header: bool = typer.Option(False, help="Skip the first line (column names)"),
    db: str | None = DbOption,
) -> None:
    """Import gift-card codes into a pool; codes already there are skipped."""
    import csv

    from trofast.programs import service as programs
    from trofast.rewards import service as rewards

    with file.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    codes = [row[0].strip() for row in rows[1 if header else 0 :]]
    database = _database(db)
    with database.write() as conn:
        found = programs.by_key(conn, program)
        out = rewards.import_codes(conn, found.program_id, pool, codes, SystemClock().now())
    console.print(
        f"Pool '{out.pool}': {out.added} codes added, {out.duplicates} already there, "
        f"{out.available} available."
    )


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


@member_app.command("export")
def member_export(
    ref: str = typer.Argument(..., help="Member id or loyalty number"),
    program: str = typer.Option(..., help="Program key"),
    out: Path | None = typer.Option(None, help="Write the JSON here instead of to stdout"),
    db: str | None = DbOption,
) -> None:
    """Everything Trofast holds about a member, as one JSON document."""
    import json

    from trofast.kit.errors import Problem
    from trofast.members import privacy
    from trofast.programs import service as programs

    database = _database(db)
    try:
        with database.read() as conn:
            document = privacy.export(
                conn, programs.by_key(conn, program), ref, SystemClock().now()
            )
    except Problem as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from None
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"Exported member {document['member']['id']} to {out}.")


@member_app.command("erase")
def member_erase(
    ref: str = typer.Argument(..., help="Member id or loyalty number"),
    program: str = typer.Option(..., help="Program key"),
    reason: str = typer.Option(..., help="Why (recorded; no personal data in it)"),
    db: str | None = DbOption,
) -> None:
    """Erase a member's personal data for good; points are forfeited (docs/privacy.md)."""
    from trofast.kit.errors import Problem
    from trofast.members import privacy
    from trofast.programs import service as programs

    if not reason.strip():
        typer.echo("--reason must not be empty.", err=True)
        raise typer.Exit(1)
    database = _database(db)
    try:
        with database.write() as conn:
            found = programs.by_key(conn, program)
            done = privacy.erase(conn, found, ref, reason, SystemClock().now(), "cli")
    except Problem as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from None
    console.print(
        f"Member {done.member_id} erased at {done.erased_at.isoformat()}: "
        f"{done.points_forfeited} points and {done.pending_points_forfeited} pending points "
        f"forfeited, {done.money_forfeited} in the money wallet, "
        f"{done.vouchers_cancelled} vouchers cancelled, {done.messages_dropped} messages dropped.",
        highlight=False,
        soft_wrap=True,
    )


@report_app.command("kpis")
def report_kpis(
    program: str = typer.Option(..., help="Program key"),
    first: str | None = typer.Option(
        None, "--from", help="First month, YYYY-MM (default: 11 months before --to)"
    ),
    last: str | None = typer.Option(None, "--to", help="Last month, YYYY-MM (default: this one)"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    db: str | None = DbOption,
) -> None:
    """The program's key figures per month: members, active %, repeat customers %, average
    purchase of members and non-members, points earned, redeemed and expired, liability
    (docs/measurement.md)."""
    from rich.table import Table

    from trofast.analytics.kpis import kpis

    report = _report(db, program, lambda conn, version, now: kpis(conn, version, now, first, last))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    currency = report.currency
    table = Table(title=f"Key figures of '{report.program}' ({report.timezone})")
    for heading in (
        "Month", "Members", "New", "Active %", "Buyers", "Repeat %", "Purchases",
        f"Avg ({currency})", "Members' avg", "Others' avg", "Points earned", "Redeemed",
        "Expired", f"Liability ({currency})", "Redemption %",
    ):  # fmt: skip
        table.add_column(heading, justify="left" if heading == "Month" else "right")
    for m in report.months:
        table.add_row(
            m.month, f"{m.members:,}", f"{m.enrolments:,}", _pct(m.active_members_pct),
            f"{m.buying_members:,}", _pct(m.repeat_customers_pct), f"{m.purchases:,}",
            _amount(m.average_purchase), _amount(m.average_member_purchase),
            _amount(m.average_non_member_purchase), f"{m.points_earned:,}",
            f"{m.points_redeemed:,}", f"{m.points_expired:,}", _amount(m.liability_value),
            _pct(m.redemption_rate_pct),
        )  # fmt: skip
    Console(width=max(console.width, 190)).print(table)  # wide enough to cut no number short


@report_app.command("cohorts")
def report_cohorts(
    program: str = typer.Option(..., help="Program key"),
    first: str | None = typer.Option(
        None, "--from", help="First enrolment month, YYYY-MM (default: 11 months before --to)"
    ),
    last: str | None = typer.Option(
        None, "--to", help="Last enrolment month, YYYY-MM (default: this one)"
    ),
    value: bool = typer.Option(
        False, "--value", help="Net revenue per member to date instead of the share who bought"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    db: str | None = DbOption,
) -> None:
    """Members by enrolment month, followed month by month: the share who bought in each
    month since, or (--value) their net revenue per member to date (docs/measurement.md)."""
    from rich.table import Table

    from trofast.analytics.cohorts import cohorts

    report = _report(
        db, program, lambda conn, version, now: cohorts(conn, version, now, first, last)
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    shown = f"net revenue per member to date ({report.currency})" if value else "% who bought"
    table = Table(title=f"Cohorts of '{report.program}' to {report.as_of}: {shown}")
    table.add_column("Enrolled")
    table.add_column("Members", justify="right")
    for since in range(max((len(c.value_per_member) for c in report.cohorts), default=0)):
        table.add_column(f"+{since}", justify="right")
    for c in report.cohorts:
        cells = [_amount(v) for v in c.value_per_member] if value else map(_pct, c.buying_pct)
        table.add_row(c.cohort, f"{c.members:,}", *cells)
    Console(width=max(console.width, 30 + 13 * len(table.columns))).print(table)


@report_app.command("rfm")
def report_rfm(
    program: str = typer.Option(..., help="Program key"),
    segment: str | None = typer.Option(
        None, help="List this segment's members (loyalty number and scores) instead"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    db: str | None = DbOption,
) -> None:
    """Members scored on recency, frequency and monetary value (RFM) and their segments;
    with --segment, the members of one segment, one a line (docs/measurement.md)."""
    from rich.table import Table

    from trofast.analytics import rfm

    if segment is not None:
        chosen = segment
        for s in _report(db, program, lambda conn, v, now: rfm.members_in(conn, v, now, chosen)):
            typer.echo(
                s.model_dump_json()
                if as_json
                else f"{s.loyalty_number}\tR{s.r} F{s.f} M{s.m}\t{s.recency_days} days\t"
                f"{s.frequency} purchases\t{_amount(s.monetary)}"
            )
        return
    report = _report(db, program, rfm.rfm)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    table = Table(title=f"RFM segments of '{report.program}' (last {report.window_days} days)")
    for heading in ("Segment", "Members", "%", "Avg days since", "Avg purchases",
                    f"Avg spent ({report.currency})", "Rule"):  # fmt: skip
        table.add_column(heading, justify="left" if heading in ("Segment", "Rule") else "right")
    for seg in report.segments:
        table.add_row(
            seg.segment, f"{seg.members:,}", _pct(seg.pct),
            "-" if seg.avg_recency_days is None else f"{seg.avg_recency_days:.1f}",
            "-" if seg.avg_frequency is None else f"{seg.avg_frequency:.1f}",
            _amount(seg.avg_monetary), seg.rule,
        )  # fmt: skip
    Console(width=max(console.width, 150)).print(table)
    console.print(f"Members without a purchase (not scored): {report.never_bought:,}")


def _report(
    db: str | None, program: str, make: Callable[[Connection, ProgramVersion, datetime], R]
) -> R:
    """`make(conn, the program's current version, now)` over the database; a refusal
    (a Problem: unknown program, bad month, ...) ends the command with its detail."""
    from trofast.kit.errors import Problem
    from trofast.programs import service as programs

    database = _database(db)
    try:
        with database.read() as conn:
            return make(conn, programs.by_key(conn, program), SystemClock().now())
    except Problem as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _amount(minor: int | None) -> str:
    """Minor units in major units with two decimals ("-" for none)."""
    return "-" if minor is None else f"{minor / 100:,.2f}"


@report_app.command("settlement")
def report_settlement(
    month: str = typer.Option(..., help="YYYY-MM, in the program's time zone"),
    program: str = typer.Option(..., help="Program key"),
    db: str | None = DbOption,
) -> None:
    """What each partner owes the program, or is owed, for one month."""
    from trofast.partners import service as partners

    report = _report(
        db, program, lambda conn, version, _now: partners.settlement(conn, version, month)
    )
    currency = report.currency
    console.print(f"Partner settlement of '{report.program}' for {report.month} ({currency}):")
    for line in report.partners:
        owes = "owes the program" if line.net >= 0 else "is owed"
        console.print(
            f"{line.partner} ({line.name}): issued {line.points_issued} points = "
            f"{_money(line.issued_value, currency)} owed by the partner; "
            f"redeemed {line.points_redeemed} points = "
            f"{_money(line.redeemed_value, currency)} owed to the partner; "
            f"net {_money(abs(line.net), currency)} {owes}",
            highlight=False,
            soft_wrap=True,
        )
    if not report.partners:
        console.print("No partners.")


@rules_app.command("try")
def rules_try(
    program_file: Path = typer.Argument(..., help="Program file (YAML/JSON)"),
    activity_file: Path = typer.Argument(..., help="One activity as JSON, as sent to the API"),
    birth_date: str | None = typer.Option(None, help="The member's birth date, YYYY-MM-DD"),
    tier: str | None = typer.Option(None, help="The member's tier"),
) -> None:
    """Evaluate one activity under a program file, offline: effects and the rule behind each."""
    import json
    from datetime import date

    from pydantic import TypeAdapter, ValidationError
    from rich.table import Table

    from trofast.activities.schemas import ActivityIn, PurchaseIn, ReturnIn
    from trofast.activities.service import facts_of
    from trofast.rules import engine

    spec = _read_program(program_file)
    try:
        data = TypeAdapter(ActivityIn).validate_python(json.loads(activity_file.read_text()))
    except (ValueError, ValidationError) as exc:
        typer.echo(f"{activity_file}: {exc}", err=True)
        raise typer.Exit(1) from None
    if isinstance(data, ReturnIn):
        typer.echo("Returns are priced against their stored purchase; try the purchase.", err=True)
        raise typer.Exit(1)
    if isinstance(data, PurchaseIn) and data.currency != spec.currency:
        typer.echo(f"The program counts in {spec.currency}, not {data.currency}.", err=True)
        raise typer.Exit(1)
    member = engine.MemberSnapshot(
        id=0,
        status="active",
        birth_date=date.fromisoformat(birth_date) if birth_date else None,
        tier=tier,
    )
    occurred_at = data.occurred_at or SystemClock().now()
    evaluation = engine.evaluate(spec, facts_of(data, occurred_at), member)
    table = Table("rule", "points", "cashback", "vests", "expires", "note")
    notes = {o.rule: o.note for o in evaluation.outcomes}
    for effect in evaluation.points:
        table.add_row(
            effect.rule,
            str(effect.points),
            "",
            _date(effect.vests_at),
            _date(effect.expires_at),
            notes.get(effect.rule.split(":")[0], ""),
        )
    for cash in evaluation.cashback:
        table.add_row(cash.rule, "", str(cash.amount), "", "", notes.get(cash.rule, ""))
    for outcome in evaluation.outcomes:
        if outcome.value == 0 and outcome.note:
            table.add_row(outcome.rule, "0", "", "", "", outcome.note)
    console.print(table)
    console.print(
        f"Total: {evaluation.total_points} {spec.point_name}"
        + (
            f", {sum(c.amount for c in evaluation.cashback)} cashback"
            if evaluation.cashback
            else ""
        )
    )


def _date(value: object) -> str:
    return "" if value is None else str(value)[:10]


@app.command()
def simulate(
    program_file: Path = typer.Option(..., "--program", help="The proposed program file"),
    start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD (program time zone)"),
    end: str = typer.Option(..., "--to", help="Last day, YYYY-MM-DD (inclusive)"),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Processes to share the members between, up to one per core (each takes about a"
        " second to start: for histories of hundreds of thousands of activities or more)",
    ),
    db: str | None = DbOption,
) -> None:
    """Replay stored history under a proposed program version, writing nothing; per month:
    points issued, liability in money, members by tier (programs with tiers), vouchers
    granted by the rules (per reward), and the difference from what really happened."""
    from datetime import date, datetime, time, timedelta

    from rich.progress import Progress
    from rich.table import Table

    from trofast.analytics.simulate import simulate as replay
    from trofast.programs import service as programs

    spec = _read_program(program_file)
    zone = spec.zone
    first = datetime.combine(date.fromisoformat(start), time(0), tzinfo=zone)
    last = datetime.combine(date.fromisoformat(end) + timedelta(days=1), time(0), tzinfo=zone)
    database = _database(db)
    with database.read() as conn:
        current = programs.by_key(conn, spec.key)
        if current.spec.currency != spec.currency:
            typer.echo("The proposed program has another currency.", err=True)
            raise typer.Exit(1)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("Replaying activities", total=None)
            result = replay(
                conn,
                current.program_id,
                spec,
                first,
                last,
                progress=lambda n: progress.advance(task, n),
                workers=workers,
            )
    table = Table(
        "month",
        "activities",
        "issued",
        "simulated",
        "difference",
        "liability",
        "simulated liability",
    )
    for month in result.months:
        table.add_row(
            month.month,
            f"{month.activities:,}",
            f"{month.actual_points:,}",
            f"{month.simulated_points:,}",
            f"{month.difference:+,}",
            _money(result.money(month.actual_liability), spec.currency),
            _money(result.money(month.simulated_liability), spec.currency),
        )
    console.print(table)
    if result.tiers:
        # Members by tier at each month's end: simulated (difference from the real ones).
        by_tier = Table("month", *reversed(result.tiers), "real")
        for month in result.months:
            real, change = month.actual_tiers, month.tier_difference
            by_tier.add_row(
                month.month,
                *(
                    f"{n:,}" + ("" if real is None else f" ({change[t]:+,})")
                    for t, n in month.simulated_tiers.items()
                ),
                "—" if real is None else " / ".join(f"{t} {n:,}" for t, n in real.items()),
            )
        console.print("Members by tier at the end of each month (difference from the real ones)")
        console.print(by_tier)
    granted = Table("month", "reward", "vouchers", "simulated", "difference")
    for month in result.months:
        for reward in sorted({*month.actual_vouchers, *month.simulated_vouchers}):
            really = month.actual_vouchers.get(reward, 0)
            proposed = month.simulated_vouchers.get(reward, 0)
            granted.add_row(
                month.month, reward, f"{really:,}", f"{proposed:,}", f"{proposed - really:+,}"
            )
    if granted.rows:
        console.print("Vouchers granted by the rules (real, whatever became of them since)")
        console.print(granted)
    read = f"{result.activities:,} activities"
    if result.history_activities:
        read += f" (and {result.history_activities:,} earlier ones for the tiers)"
    note = "Liability assumes spending and expiry as they happened."
    if result.tiers:
        note += (
            " Members by tier at each month's end: real ones from the tier history; simulated"
            " ones by the proposed tiers' rules replayed from the window before --from (no"
            " manual tiers; see docs/tiers.md)."
        )
    console.print(f"{read} in {result.seconds:.2f} s ({result.per_second:,.0f}/s). {note}")


def _money(minor: int, currency: str) -> str:
    return f"{_amount(minor)} {currency}"


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
        database,
        worker_interval=settings.worker_interval_seconds if run_worker else None,
        freeze_gc=True,
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
    from trofast.demo import PROGRAM_KEY, ensure_demo

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
        console.print(f"  {scope:<5} key:     {token}", soft_wrap=True)
    console.print(
        f"  try:  curl -H 'Authorization: Bearer {keys['read']}' {base}/v1/reports/kpis\n"
        f"        {Path(sys.executable).parent / 'trofast'} report kpis --program {PROGRAM_KEY}"
        f" --db sqlite:///{path}\n",
        soft_wrap=True,
    )
    if not no_serve:
        _serve(database, host, port, run_worker=True)


def main() -> None:  # pragma: no cover
    sys.exit(app())
