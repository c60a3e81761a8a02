"""Serve one of the two benchmarked apps with uvicorn (run as a subprocess by earn.py).

    python benchmarks/serve.py trofast|naive DATABASE_URL PORT

`trofast` is what `trofast serve --no-worker` runs: `create_app` over `connect(url)` with
the configured pool size, the heap frozen for the garbage collector at startup. `naive` is
the raw-SQL endpoint of rawsql.py, as naive as its name (no such tuning). Both run on one
uvicorn worker with uvloop and httptools when installed, without access logs.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import uvicorn

PROGRAM_KEY = "bench"


def loop_and_http() -> tuple[str, str]:
    """uvloop and httptools when they are installed, else uvicorn's pure-Python choices."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def build(kind: str, url: str) -> Any:
    if kind == "trofast":
        from trofast.app import create_app
        from trofast.config import Settings
        from trofast.kit.db import connect

        return create_app(connect(url, pool_size=Settings().pool_size), freeze_gc=True)
    if kind == "naive":
        from rawsql import naive_app

        return naive_app(url, PROGRAM_KEY)
    raise SystemExit(f"unknown app {kind!r}: trofast or naive")


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    kind, url, port = argv
    loop, http = loop_and_http()
    uvicorn.run(
        build(kind, url),
        host="127.0.0.1",
        port=int(port),
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
