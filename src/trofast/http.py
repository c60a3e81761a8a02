"""HTTP plumbing shared by every module's endpoints: the app's services, authentication,
problem+json rendering and Idempotency-Key handling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection

from trofast.access import service as access
from trofast.kit.auth import Principal, Scope
from trofast.kit.clock import Clock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.kit.idempotency import remember, replay, request_hash

PROBLEM_JSON = "application/problem+json"


@dataclass
class Services:
    """What a request handler needs: the database and the clock."""

    db: Database
    clock: Clock


async def services(request: Request) -> Services:
    """The app's services (async: a plain `def` dependency costs a thread-pool hop)."""
    svc: Services = request.app.state.services
    return svc


class RenderedJSON(JSONResponse):
    """A JSON response whose body is already JSON (pydantic's `model_dump_json` writes the
    same bytes as `JSONResponse` does from `model_dump`, without the dict in between)."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes)
        return content


def problem_response(problem: Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(
        problem.body(), status_code=problem.status, media_type=PROBLEM_JSON, headers=headers
    )


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the bearer key and checks it grants `scope`."""

    async def dependency(request: Request) -> Principal:
        # Reads the request itself: declared Header/Depends parameters cost FastAPI more
        # per request than the cached key check.
        svc: Services = request.app.state.services
        authorization = request.headers.get("authorization")
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Problem(401, "unauthorized", "Send an API key: Authorization: Bearer tf_...")
        token = authorization[7:].strip()
        principal = access.cached_principal(str(svc.db.reader.url), token)
        if principal is None:  # the database is only asked on a cache miss, off the loop
            principal = await run_in_threadpool(_authenticate, svc, token)
        if not principal.may(scope):
            raise Problem(
                403, "forbidden", f"This key has the {principal.scope} scope; {scope} is needed."
            )
        return principal

    return dependency


def _authenticate(svc: Services, token: str) -> Principal:
    with svc.db.read() as conn:
        return access.authenticate(conn, token)


def idempotent(
    conn: Connection,
    principal: Principal,
    key: str | None,
    request_parts: Callable[[], tuple[Any, ...]],
    status: int,
    handler: Callable[[], BaseModel],
    now: Any,
) -> JSONResponse:
    """Run `handler` once per Idempotency-Key: a repeat replays the stored answer.

    `request_parts` is only called when a key is given (dumping a request costs time)."""
    if key is None:
        return RenderedJSON(handler().model_dump_json().encode(), status_code=status)
    if not 1 <= len(key) <= 200:
        raise Problem(400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 characters.")
    digest = request_hash(*request_parts())
    stored = replay(conn, principal.program_id, key, digest)
    if stored is not None:
        code, body = stored
        return JSONResponse(body, status_code=code, headers={"Idempotent-Replayed": "true"})
    body = handler().model_dump(mode="json")
    remember(conn, principal.program_id, key, digest, status, body, now)
    return JSONResponse(body, status_code=status)
