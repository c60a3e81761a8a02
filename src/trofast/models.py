"""Every table, imported once so `metadata` is complete (Alembic, tests)."""

from trofast.access.models import api_keys
from trofast.activities.models import activities
from trofast.kit.idempotency import idempotency_keys
from trofast.kit.orm import metadata
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers
from trofast.members.models import members
from trofast.programs.models import program_versions, programs

__all__ = [
    "accounts",
    "activities",
    "api_keys",
    "idempotency_keys",
    "ledger_transactions",
    "lots",
    "members",
    "metadata",
    "program_versions",
    "programs",
    "transfers",
]
