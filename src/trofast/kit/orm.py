"""Table metadata shared by every domain module, and column helpers.

Tables are SQLAlchemy Core `Table`s: the hot paths run Core statements, Alembic reads
the same metadata. Every table carries `program_id` (tenant isolation, sharding key).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from operator import itemgetter
from typing import Any, TypeAlias

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from trofast.kit.clock import as_utc
from trofast.kit.errors import InvariantBroken

#: A result row of any shape.
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: 64-bit ids on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid alias.
Id = BigInteger().with_variant(Integer(), "sqlite")
#: The largest id either database can store; a bigger reference cannot exist (and binding it
#: fails in the driver), so input is checked against it.
MAX_ID = 2**63 - 1


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def id_column() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def program_column() -> Column[int]:
    return Column("program_id", Id, ForeignKey("programs.id"), nullable=False)


def insert_returning_ids(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert `rows` (all with the same keys); their new ids, in the order of `rows`.

    The ids are assigned up front and the rows go to the driver's `executemany` (psycopg
    pipelines it), converted by `driver_values`: SQLAlchemy's per-row parameter processing
    cost more than the rest of a batch's inserts. On SQLite every write transaction holds
    the database's only write lock (`BEGIN IMMEDIATE`), so max(id)+1... cannot be taken by
    anyone else; on PostgreSQL the ids come from the table's sequence.
    """
    if not rows:
        return []
    ids = next_ids(conn, table, len(rows))
    insert_rows(conn, table, [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids


def next_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """`count` new ids for `table`, ascending: on SQLite after its largest id (the write
    transaction holds the only write lock), on PostgreSQL from the table's sequence."""
    if count <= 0:
        return []
    if conn.dialect.name == "sqlite":
        last = driver_rows(conn, f"SELECT coalesce(max(id), 0) FROM {table.name}", ())[0][0]
        ids = list(range(int(last) + 1, int(last) + 1 + count))
    else:
        rows = driver_rows(
            conn,
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table.name, count),
        )
        ids = sorted(int(row[0]) for row in rows)
    if len(ids) != count:
        raise InvariantBroken(f"{table.name}: {len(ids)} ids for {count} rows")
    return ids


def insert_driver_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` in one `executemany` on the driver: each row holds every name in
    `columns` (and nothing else is written), its values already as the driver takes them
    (`bind_time`, `bind_json`...). For batch paths that build their rows themselves.

    On PostgreSQL many rows go by `COPY ... FROM STDIN` instead: one statement, where
    `executemany` sends one per row (PERFORMANCE.md: COPY writes the batch earn 35 %
    faster); constraints, foreign keys and their errors are the same."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        _copy_rows(conn, table, tuple(columns), rows)
        return
    _bulk_insert(table, tuple(columns)).executemany(conn, rows)


#: The fewest rows `insert_driver_rows` sends by COPY on PostgreSQL.
COPY_FROM = 20


def _copy_rows(
    conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
) -> None:
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    take = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    try:
        with driver_cursor(conn).copy(sql) as copy:
            for row in rows:
                copy.write_row(take(row))
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise_wrapped(conn, sql, (), exc)


def time_binder(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """`bind_time` for many values, each distinct instant converted once (a batch's rows
    share a few timestamps: the request's time, the activities' times)."""
    seen: dict[datetime, Any] = {}

    def bind(value: datetime | None) -> Any:
        if value is None:
            return None
        hit = seen.get(value)
        if hit is None:
            # Equal instants in other zones hash alike and convert alike.
            hit = seen[value] = bind_time(value, dialect)
        return hit

    return bind


def driver_rows(conn: Connection, sql: str, args: Any) -> list[tuple[Any, ...]]:
    """Run a query written for the driver (its own paramstyle) in `conn`'s transaction; its
    rows as tuples. For the few statements a `DriverStatement` cannot hold (IN lists)."""
    cursor = driver_cursor(conn)
    try:
        cursor.execute(sql, args)
    except conn.dialect.loaded_dbapi.Error as exc:
        _raise_wrapped(conn, sql, args, exc)
    return list(cursor.fetchall())


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """`conn.execute(table.insert(), rows)` (all rows with the same keys), on the driver's
    `executemany` with the values converted once by `driver_values`."""
    if not rows:
        return
    converted = driver_values(conn.dialect, table, list(rows[0]), rows)
    if converted is None:  # a column type the driver path does not convert: SQLAlchemy's way
        conn.execute(table.insert(), rows)
        return
    columns, values = converted
    _bulk_insert(table, columns).executemany(conn, values)


_bulk_inserts: dict[tuple[str, tuple[str, ...]], DriverStatement] = {}


def _bulk_insert(table: Table, columns: tuple[str, ...]) -> DriverStatement:
    key = (table.name, columns)
    stmt = _bulk_inserts.get(key)
    if stmt is None:
        stmt = _bulk_inserts[key] = DriverStatement(table.insert(), columns)
    return stmt


def driver_values(
    dialect: Dialect, table: Table, keys: list[str], rows: list[dict[str, Any]]
) -> tuple[tuple[str, ...], list[dict[str, Any]]] | None:
    """(columns, rows) as the driver takes them, with the columns' scalar Python defaults
    filled in and values converted as SQLAlchemy's column types convert them; None if a
    row has other keys or a column needs a conversion not done here."""
    sqlite = dialect.name == "sqlite"
    convert: list[tuple[str, Any]] = []
    defaults: dict[str, Any] = {}
    for column in table.columns:
        name = column.name
        if name not in keys:
            if name == "id":
                continue
            default = column.default
            if default is None:
                continue
            if not getattr(default, "is_scalar", False):
                return None
            defaults[name] = default.arg  # type: ignore[attr-defined]
        kind = column.type
        if isinstance(kind, UtcDateTime):
            convert.append((name, _time_binder(sqlite)))
        elif isinstance(kind, JSON):
            convert.append((name, bind_json))
        elif isinstance(kind, Date) and sqlite:
            convert.append((name, _date_text))
        elif not isinstance(kind, Integer | String | Boolean):
            return None
    if any(k not in table.c for k in keys):
        return None
    columns = tuple(keys) + tuple(defaults)
    same = rows[0].keys()
    out = []
    for row in rows:
        if row.keys() != same:
            return None
        values = {**row, **defaults} if defaults else dict(row)
        for name, function in convert:
            value = values[name]
            if value is not None or function is bind_json:
                values[name] = function(value)
        out.append(values)
    return columns, out


def _time_binder(sqlite: bool) -> Any:
    def bind(value: datetime) -> Any:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = as_utc(value)
        return utc.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else utc

    return bind


def _date_text(value: date) -> str:
    return value.isoformat()


class DriverStatement:
    """A Core statement compiled once per dialect and run straight on the DB-API cursor of
    the caller's connection, in its transaction: for the few statements of the earn path.

    `Connection.execute` costs 50-100 µs of Python per statement (execution context, bind
    and result processing, a new cursor); the driver alone 5-10 µs. Values go to the driver
    as they are, so the caller converts them (`bind_time`, `bind_json`, `read_time`...), and
    rows come back as plain tuples. Driver errors are raised as SQLAlchemy's `DBAPIError`
    subclasses (IntegrityError...), as `execute` raises them.
    """

    def __init__(self, statement: ClauseElement, column_keys: Sequence[str] | None = None):
        self._statement = statement
        self._column_keys = None if column_keys is None else list(column_keys)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        hit = self._compiled.get(dialect.name)
        if hit is None:
            if dialect.paramstyle not in ("qmark", "pyformat"):
                raise InvariantBroken(f"unsupported paramstyle {dialect.paramstyle}")
            compiled = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
            names = getattr(compiled, "positiontup", None)
            # The statement's own constants (e.g. kind = 'member') are binds too.
            constants = {k: v for k, v in compiled.params.items() if v is not None}
            hit = (compiled.string, None if names is None else tuple(names), constants)
            self._compiled[dialect.name] = hit
        return hit

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run with `params` (every bind name must be present); the DB-API cursor."""
        sql, names, constants = self._sql(conn.dialect)
        cursor = driver_cursor(conn)
        args: Any
        if names is not None:
            args = [params[n] if n in params else constants[n] for n in names]
        else:
            args = {**constants, **params} if constants else params
        try:
            cursor.execute(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            _raise_wrapped(conn, sql, args, exc)
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per row (every bind name present in each), as one `executemany`."""
        sql, names, constants = self._sql(conn.dialect)
        args: Any
        # Rows that hold every name (a batch's rows: columns with defaults given too) go to
        # the driver as they are, or as tuples by one itemgetter; others take the constants.
        given = not rows or all(n in rows[0] for n in (names or constants))
        if names is not None:
            take = itemgetter(*names)
            if not (given or not constants):
                rows = [{**constants, **row} for row in rows]
            args = [take(row) for row in rows] if len(names) > 1 else [(take(r),) for r in rows]
        else:
            args = [{**constants, **row} for row in rows] if constants and not given else rows
        try:
            driver_cursor(conn).executemany(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            _raise_wrapped(conn, sql, args, exc)


def _raise_wrapped(conn: Connection, sql: str, args: Any, exc: Exception) -> None:
    raise DBAPIError.instance(
        sql, args, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
    ) from exc


def driver_cursor(conn: Connection) -> Any:
    """A DB-API cursor of `conn`'s driver connection, kept with that connection for reuse."""
    proxied = conn.connection
    raw = proxied.driver_connection
    kept = proxied.info.get("trofast.cursor")
    if kept is None or kept[0] is not raw:
        kept = (raw, raw.cursor())  # type: ignore[union-attr]
        proxied.info["trofast.cursor"] = kept
    return kept[1]


def bind_time(value: datetime, dialect: Dialect) -> Any:
    """What `UtcDateTime` hands the driver for `value` (SQLite: UTC text, as SQLAlchemy
    writes it)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if dialect.name == "sqlite":
        return as_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
    return as_utc(value)


def read_time(value: Any) -> datetime | None:
    """A `UtcDateTime` column as the driver returns it, as `UtcDateTime` reads it."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


def read_date(value: Any) -> date | None:
    """A `Date` column as the driver returns it (SQLite: ISO text)."""
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value  # type: ignore[no-any-return]


def bind_json(value: Any) -> str:
    """A `JSON` column's value as SQLAlchemy serialises it (json.dumps, default options)."""
    return json.dumps(value)


def read_json(value: Any) -> Any:
    """A `JSON` column as the driver returns it (SQLite: text; psycopg: decoded)."""
    return json.loads(value) if isinstance(value, str | bytes) else value
