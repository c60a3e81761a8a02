"""API key secrets and scopes.

A key looks like `tf_<prefix>_<secret>`: the prefix finds the row, the secret is checked
against a SHA-256 hash (keys are 160 random bits, so a slow hash buys nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    admin = "admin"
    pos = "pos"
    read = "read"
    #: A partner business (coalition): only the partner endpoints, for one partner id.
    partner = "partner"


#: What each scope may do: admin everything, pos the till's work plus reading; partner
#: only its own endpoints (it grants none of the others, and none of the others grant it).
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.admin: frozenset({Scope.admin, Scope.pos, Scope.read}),
    Scope.pos: frozenset({Scope.pos, Scope.read}),
    Scope.read: frozenset({Scope.read}),
    Scope.partner: frozenset({Scope.partner}),
}


@dataclass(frozen=True)
class Principal:
    """The caller of a request: an API key of one program with one scope (a partner key
    also names the partner it acts for)."""

    key_id: int
    program_id: int
    scope: Scope
    partner: str | None = None

    def may(self, needed: Scope) -> bool:
        return needed in GRANTS[self.scope]

    @property
    def actor(self) -> str:
        return f"apikey:{self.key_id}"


def new_secret() -> tuple[str, str, str]:
    """A fresh key: (full token to show once, prefix, hash of the secret to store)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(20)
    return f"tf_{prefix}_{secret}", prefix, hash_secret(secret)


def split_token(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "tf" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
