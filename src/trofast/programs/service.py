"""Programs: apply a document as a new immutable version, and read versions back."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.engine import URL

from trofast.kit.errors import Problem, invalid, not_found
from trofast.ledger import service as ledger
from trofast.programs import repository
from trofast.programs.spec import ProgramSpec, validate_data


@dataclass(frozen=True)
class ProgramVersion:
    """A program's id, its version number and the parsed document of that version."""

    program_id: int
    version: int
    spec: ProgramSpec


#: Keyed by the database's URL object (equal for the read and write engines; rendering it as
#: text would cost more than the look-up).
_spec_cache: dict[tuple[URL, int, int], ProgramSpec] = {}
_cache_lock = threading.Lock()
#: The version each program was last read at as its current one, per database.
_last_current: dict[tuple[URL, int], int] = {}


def apply(conn: Connection, spec: ProgramSpec, now: datetime) -> ProgramVersion:
    """Store `spec` as the next version of its program, creating the program if new."""
    row = repository.find_by_key(conn, spec.key)
    if row is None:
        program_id = repository.insert_program(conn, spec.key, now)
        ledger.open_program_accounts(conn, program_id)
        current = 0
    else:
        program_id = int(row.id)
        current = repository.lock_program(conn, program_id)
        previous = load_version(conn, program_id, current).spec
        if previous.currency != spec.currency:
            raise invalid(
                "currency_change",
                f"A program's currency cannot change ({previous.currency} -> {spec.currency}); "
                "start a new program instead.",
            )
    version = current + 1
    repository.insert_version(conn, program_id, version, spec.model_dump(mode="json"), now)
    return ProgramVersion(program_id, version, spec)


def load_version(conn: Connection, program_id: int, version: int) -> ProgramVersion:
    """A version's parsed document; versions are immutable, so parses are cached."""
    cache_key = (conn.engine.url, program_id, version)
    spec = _spec_cache.get(cache_key)
    if spec is None:
        document = repository.version_document(conn, program_id, version)
        if document is None:
            raise not_found("program_version", f"{program_id}@{version}")
        spec = validate_data(document, stored=True)
        with _cache_lock:
            _spec_cache[cache_key] = spec
    return ProgramVersion(program_id, version, spec)


def current(conn: Connection, program_id: int) -> ProgramVersion:
    version = repository.current_version(conn, program_id)
    if version is None:
        raise not_found("program", program_id)
    return seen_current(conn, program_id, version)


def seen_current(conn: Connection, program_id: int, version: int) -> ProgramVersion:
    """`version`, which the caller has just read as the program's current one."""
    _last_current[(conn.engine.url, program_id)] = version
    return load_version(conn, program_id, version)


def last_current(conn: Connection, program_id: int) -> ProgramVersion:
    """The version last read as current, without a query (the first time: `current`). A
    guess: for callers that read the current version again in a statement of their own."""
    version = _last_current.get((conn.engine.url, program_id))
    if version is None:
        return current(conn, program_id)
    return load_version(conn, program_id, version)


def by_key(conn: Connection, key: str) -> ProgramVersion:
    """The current version of the program with `key` (404 `program_not_found`)."""
    row = repository.find_by_key(conn, key)
    if row is None:
        raise Problem(404, "program_not_found", f"No program has the key {key!r}.")
    return load_version(conn, int(row.id), int(row.current_version))
