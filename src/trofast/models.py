"""Every table, imported once so `metadata` is complete (Alembic, tests)."""

from trofast.access.models import api_keys
from trofast.activities.models import activities, rule_counters
from trofast.households.models import household_invites, households
from trofast.kit.idempotency import idempotency_keys
from trofast.kit.orm import metadata
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers
from trofast.members.models import member_erasures, member_users, members
from trofast.memberships.models import membership_history, memberships
from trofast.notify.models import outbox
from trofast.partners.models import partner_activities
from trofast.programs.models import program_versions, programs
from trofast.rewards.models import gift_codes, reward_stock, vouchers
from trofast.tiers.models import member_tiers, tier_history

__all__ = [
    "accounts",
    "activities",
    "api_keys",
    "gift_codes",
    "household_invites",
    "households",
    "idempotency_keys",
    "ledger_transactions",
    "lots",
    "member_erasures",
    "member_tiers",
    "member_users",
    "members",
    "membership_history",
    "memberships",
    "metadata",
    "outbox",
    "partner_activities",
    "program_versions",
    "programs",
    "reward_stock",
    "rule_counters",
    "tier_history",
    "transfers",
    "vouchers",
]
