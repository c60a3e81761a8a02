"""HTTP: /v1/activities, one at a time or in batches of up to 1,000."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import RootModel, TypeAdapter, ValidationError
from sqlalchemy import Connection

from trofast.activities import bulk, service
from trofast.activities.schemas import ActivityIn, ActivityResult, BatchIn, BatchOut
from trofast.http import Services, idempotent, require, services
from trofast.kit.auth import Principal, Scope
from trofast.kit.errors import Problem
from trofast.programs import service as programs

router = APIRouter(prefix="/v1/activities", tags=["activities"])
_activity = TypeAdapter(ActivityIn)
_activities = TypeAdapter(list[ActivityIn])


#: Read from the request itself, documented as FastAPI documents a declared Header (a
#: declared one costs more per request than the earn's rules).
_IDEMPOTENCY_KEY_DOC: dict[str, Any] = {
    "name": "idempotency-key",
    "in": "header",
    "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Idempotency-Key"},
}


@router.post(
    "",
    status_code=201,
    response_model=ActivityResult,
    openapi_extra={"parameters": [_IDEMPOTENCY_KEY_DOC]},
)
async def post_activity(
    data: ActivityIn,
    request: Request,
    principal: Principal = Depends(require(Scope.pos)),
    dry_run: bool = Query(False, description="Evaluate and answer, but write nothing"),
) -> JSONResponse:
    """Send a purchase, a return or a custom event. Sending it again replays the answer.

    With `dry_run=true` the answer shows what the activity would earn and which rule gave
    each effect, and nothing is written."""
    svc: Services = request.app.state.services
    idempotency_key = request.headers.get("idempotency-key")
    now = svc.clock.now()

    def work(conn: Connection) -> JSONResponse:
        if dry_run:
            program = programs.current(conn, principal.program_id)
            result = service.dry_run(conn, program, data, now, principal.actor)
            return JSONResponse(result.model_dump(mode="json"), status_code=200)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("activity", data.model_dump(mode="json")),
            201,
            lambda: service.ingest_current(conn, principal.program_id, data, now, principal.actor),
            now,
        )

    # async, and the transaction queued for a writer thread: no thread parks on the pool
    return await svc.db.run_write(work)


@router.post("/batch", response_model=BatchOut)
def post_batch(
    batch: BatchIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Up to 1,000 activities in one transaction; each item is answered on its own, and a
    rejected item changes nothing. Items already received are answered as replays."""
    now = svc.clock.now()
    parsed: list[ActivityIn | Problem] = []
    try:  # all at once; item by item only to tell which items are not valid
        parsed += _activities.validate_python(batch.activities)
    except ValidationError:
        for raw in batch.activities:
            try:
                parsed.append(_activity.validate_python(raw))
            except ValidationError as exc:
                parsed.append(_validation(exc))
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("batch", batch.model_dump(mode="json")),
            200,
            lambda: _answer(bulk.ingest_many(conn, program, parsed, now, principal.actor)),
            now,
        )


class _BatchAnswer(RootModel[dict[str, Any]]):
    """A `BatchOut` already in its JSON form (the bulk path answers in dicts): the same
    document, without 1,000 result models built only to be dumped."""


def _answer(answers: list[bulk.Answer]) -> _BatchAnswer:
    items: list[dict[str, Any]] = []
    accepted = 0
    for i, answer in enumerate(answers):
        if isinstance(answer, Problem):
            items.append(
                {"index": i, "status": answer.status, "result": None, "problem": answer.body()}
            )
            continue
        accepted += 1
        result = answer if isinstance(answer, dict) else answer.model_dump(mode="json")
        status = 200 if result["replayed"] else 201
        items.append({"index": i, "status": status, "result": result, "problem": None})
    return _BatchAnswer.model_construct(
        {"accepted": accepted, "rejected": len(items) - accepted, "items": items}
    )


def _validation(exc: ValidationError) -> Problem:
    return Problem(
        422,
        "validation_error",
        "The activity is not valid.",
        errors=[
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ],
    )
