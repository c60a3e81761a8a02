"""RFC 9457 problem details with stable codes (DESIGN rule 10)."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """A client-visible error: HTTP status, a stable machine `code`, and a human `detail`.

    Raised by services; the HTTP layer renders it as application/problem+json. Raising
    it inside a transaction means the caller rolls back, so bad input changes nothing.
    """

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": f"https://trofast.dev/problems/{self.code}",
            "title": self.code.replace("_", " ").capitalize(),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            **self.extra,
        }


def not_found(what: str, ref: object) -> Problem:
    return Problem(
        404, f"{what}_not_found", f"No {what.replace('_', ' ')} {ref!s} in this program."
    )


def conflict(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(409, code, detail, **extra)


def invalid(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(422, code, detail, **extra)


class InvariantBroken(AssertionError):
    """A core invariant does not hold: a bug, never a client error. Never swallowed."""
