"""The HTTP helpers of tests/api/conftest.py that the membership API tests use."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

_serial = itertools.count(1)


@pytest.fixture
def problem() -> Callable[..., dict[str, Any]]:
    """Assert `response` is an RFC 9457 problem with `status` and `code`; return its body."""

    def check(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body: dict[str, Any] = response.json()
        assert body["status"] == status and body["code"] == code, body
        return body

    return check


@pytest.fixture
def enrol(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Enrol a member with a unique e-mail and return it."""

    def make(headers: dict[str, str]) -> dict[str, Any]:
        body = {"email": f"membership{next(_serial)}@example.com"}
        r = client.post("/v1/members", json=body, headers=headers)
        assert r.status_code == 201, r.text
        member: dict[str, Any] = r.json()
        return member

    return make
