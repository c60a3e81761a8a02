"""HTTP: /v1/program, the program the API key belongs to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from trofast.http import Services, require, services
from trofast.kit.auth import Principal, Scope
from trofast.programs import service

router = APIRouter(prefix="/v1/program", tags=["program"])


@router.get("")
def current_program(
    principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> dict[str, Any]:
    """The current version of the program document."""
    with svc.db.read() as conn:
        program = service.current(conn, principal.program_id)
    return {"version": program.version, "document": program.spec.model_dump(mode="json")}
