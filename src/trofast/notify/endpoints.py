"""HTTP: /v1/events (the outbox, for polling until webhooks exist) and /v1/expiring."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.http import Services, require, services
from trofast.kit.auth import Principal, Scope
from trofast.notify import expiry, outbox
from trofast.notify.schemas import EventPage, ExpiringPage

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events", response_model=EventPage)
def list_events(
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    topic: str | None = Query(None, max_length=60, examples=["points.transferred"]),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> EventPage:
    """The program's events, newest first. Webhook delivery is not built yet: poll this
    list (keep the newest id you have seen) to react to events."""
    with svc.db.read() as conn:
        return outbox.list_page(conn, principal.program_id, topic, cursor, limit)


@router.get("/expiring", response_model=ExpiringPage, tags=["points"])
def list_expiring(
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    within_days: int = Query(30, ge=1, le=365),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> ExpiringPage:
    """Members with vested points that expire within `within_days` days: how many points
    and the earliest expiry, by member id."""
    now = svc.clock.now()
    with svc.db.read() as conn:
        return expiry.expiring_page(conn, principal.program_id, now, within_days, cursor, limit)
