"""Errors are problem+json with a stable code; the OpenAPI document and /docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

Headers = dict[str, str]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v2/members", 404, "not_found"),
        ("POST", "/v1/members/1/nothing", 404, "not_found"),
        ("DELETE", "/v1/members/1", 405, "method_not_allowed"),
        ("PUT", "/v1/activities", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes(
    client: TestClient,
    pos: Headers,
    problem: Callable[..., Any],
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    for headers in (pos, {}):
        problem(client.request(method, path, headers=headers), status, code)


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/v1/members", b'{"email": "a@example.com",'),
        ("/v1/members", b"not json at all"),
        ("/v1/members", b"[]"),
        ("/v1/members", b""),
        ("/v1/activities", b'{"type": "purchase", "amount": 1e999}'),
        ("/v1/activities", b"null"),
        ("/v1/activities/batch", b'{"activities": {"type": "purchase"}}'),
        ("/v1/members/1/spend", b'{"points": 1, "reference": "x"'),
    ],
)
def test_invalid_json_bodies(
    client: TestClient, pos: Headers, problem: Callable[..., Any], path: str, content: bytes
) -> None:
    headers = {**pos, "Content-Type": "application/json"}
    body = problem(client.post(path, content=content, headers=headers), 422, "validation_error")
    assert body["errors"] and all(e["path"] and e["message"] for e in body["errors"])
    assert client.get("/v1/members", headers=pos).json()["items"] == []


def test_openapi_and_docs(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1.")
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert operations >= {
        ("GET", "/v1/program"),
        ("POST", "/v1/members"),
        ("GET", "/v1/members"),
        ("GET", "/v1/members/{ref}"),
        ("PATCH", "/v1/members/{ref}"),
        ("GET", "/v1/members/{ref}/balance"),
        ("GET", "/v1/members/{ref}/ledger"),
        ("POST", "/v1/members/{ref}/spend"),
        ("POST", "/v1/members/{ref}/adjustments"),
        ("POST", "/v1/activities"),
        ("POST", "/v1/activities/batch"),
    }
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text
