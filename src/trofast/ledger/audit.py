"""`trofast ledger audit`: recompute every ledger invariant from the raw rows.

Checks, per program: transfers balance to zero; every member account's counters equal
what its transfers say; every lot's buckets equal what its transfers say; vested lots
back exactly the posted balance and pending lots exactly the pending balance; every
pending transfer is resolved at most once and by its own amount; every partner
settlement account belongs to one partner and moves only against the program's issuance
(points the partner issued, and gave back on a return) or redemption account (points
redeemed at the partner), each partner earn by exactly the points its member legs credit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from trofast.ledger.models import accounts, ledger_transactions, lots, transfers

POSTED = ("single", "post")


def audit(conn: Connection, program_id: int | None = None) -> list[str]:
    """Every violated invariant as a sentence; an empty list means the ledger is sound."""
    problems: list[str] = []
    where_t = [] if program_id is None else [transfers.c.program_id == program_id]
    where_a = [] if program_id is None else [accounts.c.program_id == program_id]
    where_l = [] if program_id is None else [lots.c.program_id == program_id]

    kinds = {
        int(r.id): (str(r.kind), int(r.program_id), r)
        for r in conn.execute(select(accounts).where(*where_a))
    }
    legs = conn.execute(
        select(
            transfers.c.id,
            transfers.c.program_id,
            transfers.c.transaction_id,
            transfers.c.debit_account_id,
            transfers.c.credit_account_id,
            transfers.c.amount,
            transfers.c.phase,
            transfers.c.pending_id,
            transfers.c.lot_id,
        ).where(*where_t)
    ).all()

    # Recompute counters from transfers.
    counters: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pending_amount = {int(t.id): int(t.amount) for t in legs if t.phase == "pending"}
    resolved: dict[int, str] = {}
    per_program: dict[tuple[int, str], int] = defaultdict(int)
    lot_flows: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in legs:
        amount = int(t.amount)
        debit, credit = int(t.debit_account_id), int(t.credit_account_id)
        if t.phase in ("post", "void"):
            if t.pending_id not in pending_amount:
                problems.append(f"transfer {t.id} resolves {t.pending_id}, which is not pending")
            elif pending_amount[t.pending_id] != amount:
                problems.append(f"transfer {t.id} resolves {t.pending_id} with another amount")
            resolved[int(t.pending_id)] = str(t.phase)
        if t.phase in POSTED:
            counters[debit]["debits_posted"] += amount
            counters[credit]["credits_posted"] += amount
        elif t.phase == "pending":
            counters[debit]["debits_pending"] += amount
            counters[credit]["credits_pending"] += amount
        if t.phase in ("post", "void"):
            counters[debit]["debits_pending"] -= amount
            counters[credit]["credits_pending"] -= amount
        if t.lot_id is not None:
            _lot_flow(lot_flows[int(t.lot_id)], t, kinds, amount)
    # Stored member counters plus recomputed system balances net to zero per program and unit.
    for account_id, (kind, pid, row) in kinds.items():
        if kind == "member":
            net = int(row.credits_posted) - int(row.debits_posted)
        else:
            got = counters.get(account_id, {})
            net = got.get("credits_posted", 0) - got.get("debits_posted", 0)
        per_program[(pid, str(row.unit))] += net
    for (pid, unit), total in per_program.items():
        if total != 0:
            problems.append(f"program {pid}: {unit} balances sum to {total}, not zero")
    for account_id, (kind, _pid, row) in kinds.items():
        if kind != "member":
            continue
        got = counters.get(account_id, {})
        for name in ("credits_posted", "debits_posted", "credits_pending", "debits_pending"):
            if int(getattr(row, name)) != got.get(name, 0):
                problems.append(
                    f"account {account_id}: {name} is {getattr(row, name)}, "
                    f"transfers say {got.get(name, 0)}"
                )

    problems += _audit_lots(conn, where_l, lot_flows, kinds)
    problems += _audit_partners(conn, legs, kinds)
    return problems


#: Per partner account kind: its counter-account, and the transaction kinds that may debit
#: and credit it.
_PARTNER_FLOWS = {
    "partner_issuance": ("issuance", {"earn"}, {"return"}),
    "partner_redemption": ("redemption", set(), {"partner_redeem"}),
}


def _audit_partners(
    conn: Connection, legs: Sequence[Any], kinds: dict[int, tuple[str, int, Any]]
) -> list[str]:
    """Partner settlement accounts balance with the transfers that name them."""
    problems: list[str] = []
    partner_accounts = {a for a, (kind, _p, _r) in kinds.items() if kind in _PARTNER_FLOWS}
    for account_id in sorted(partner_accounts):
        row = kinds[account_id][2]
        if not row.partner or row.member_id is not None:
            problems.append(f"account {account_id}: a partner account without its partner")
    touching = [
        t
        for t in legs
        if int(t.debit_account_id) in partner_accounts
        or int(t.credit_account_id) in partner_accounts
    ]
    if not touching:
        return problems
    txn_ids = {int(t.transaction_id) for t in touching}
    header_kind = {
        int(r.id): str(r.kind)
        for r in conn.execute(
            select(ledger_transactions.c.id, ledger_transactions.c.kind).where(
                ledger_transactions.c.id.in_(txn_ids)
            )
        )
    }
    by_txn: dict[int, list[Any]] = defaultdict(list)
    for t in legs:
        if int(t.transaction_id) in txn_ids:
            by_txn[int(t.transaction_id)].append(t)
    issued: dict[int, int] = defaultdict(int)
    given_back: dict[int, int] = defaultdict(int)
    for t in touching:
        debit, credit = int(t.debit_account_id), int(t.credit_account_id)
        partner_side, debited = (debit, True) if debit in partner_accounts else (credit, False)
        other = credit if debited else debit
        kind, pid, row = kinds[partner_side]
        counter, debit_kinds, credit_kinds = _PARTNER_FLOWS[kind]
        other_kind, other_pid, other_row = kinds.get(other, ("?", -1, None))
        txn_kind = header_kind.get(int(t.transaction_id), "?")
        if t.phase != "single":
            problems.append(f"transfer {t.id}: a partner account moves only in single legs")
        if other_kind != counter or other_pid != pid or str(other_row.unit) != str(row.unit):
            problems.append(f"transfer {t.id}: {kind} of {row.partner!r} against a {other_kind}")
        if txn_kind not in (debit_kinds if debited else credit_kinds):
            side = "debits" if debited else "credits"
            problems.append(f"transfer {t.id}: a {txn_kind} transaction {side} {kind}")
        if kind == "partner_issuance" and debited:
            issued[partner_side] += int(t.amount)
            credited = sum(
                int(leg.amount)
                for leg in by_txn[int(t.transaction_id)]
                if int(leg.debit_account_id) == other
                and kinds.get(int(leg.credit_account_id), ("?",))[0] == "member"
                and leg.phase in ("single", "pending")
            )
            if credited != int(t.amount):
                problems.append(
                    f"transaction {t.transaction_id}: partner {row.partner!r} issued "
                    f"{t.amount} points, its member legs credit {credited}"
                )
        elif kind == "partner_issuance":
            given_back[partner_side] += int(t.amount)
    for account_id, back in given_back.items():
        if back > issued.get(account_id, 0):
            partner = kinds[account_id][2].partner
            problems.append(
                f"account {account_id}: partner {partner!r} got back {back} points, "
                f"issued {issued.get(account_id, 0)}"
            )
    return problems


def _lot_flow(
    flow: dict[str, int], t: Any, kinds: dict[int, tuple[str, int, Any]], amount: int
) -> None:
    """Tally one transfer against its lot's buckets."""
    debit_kind = kinds.get(int(t.debit_account_id), ("?", 0, None))[0]
    credit_kind = kinds.get(int(t.credit_account_id), ("?", 0, None))[0]
    if credit_kind == "member" and debit_kind == "redemption":
        flow["consumed"] -= amount  # a refund gives spent points back to their lot
    elif credit_kind == "member":
        if t.phase in POSTED:
            flow["credited"] += amount
        elif t.phase == "pending":
            flow["pending"] += amount
            flow["pended"] += amount
            if "first_hold" not in flow or int(t.id) < flow["first_hold"]:
                flow["first_hold"], flow["first_hold_amount"] = int(t.id), amount
        if t.phase in ("post", "void"):
            flow["pending"] -= amount
        if t.phase == "void":
            flow["voided"] += amount
    elif debit_kind == "member":
        # A hold (pending debit) keeps points on the lot as `held` until posted or voided.
        if t.phase == "pending":
            flow["held"] += amount
        elif t.phase in ("post", "void"):
            flow["held"] -= amount
        if t.phase in POSTED:
            bucket = {
                "redemption": "consumed",
                "adjustment": "consumed",
                "transfer": "consumed",
                "breakage": "expired",
                "issuance": "reversed",
            }.get(credit_kind, "unknown")
            flow[bucket] += amount


def _audit_lots(
    conn: Connection,
    where: list[Any],
    flows: dict[int, dict[str, int]],
    kinds: dict[int, tuple[str, int, Any]],
) -> list[str]:
    problems: list[str] = []
    backed: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for lot in conn.execute(select(lots).where(*where)):
        flow = flows.get(int(lot.id), {})
        parts = int(lot.remaining) + int(lot.held) + int(lot.consumed)
        parts += int(lot.expired) + int(lot.reversed)
        if parts != int(lot.original):
            problems.append(f"lot {lot.id}: buckets add up to {parts}, not {lot.original}")
        if lot.pending:
            if flow.get("pending", 0) != int(lot.remaining):
                problems.append(
                    f"lot {lot.id}: pending {lot.remaining}, open pending transfer "
                    f"{flow.get('pending', 0)}"
                )
            backed[int(lot.account_id)]["pending"] += int(lot.remaining)
        else:
            given = flow.get("credited", 0)
            taken = sum(flow.get(b, 0) for b in ("consumed", "expired", "reversed"))
            if given - taken != int(lot.remaining) + int(lot.held):
                problems.append(
                    f"lot {lot.id}: transfers leave {given - taken}, "
                    f"lot holds {int(lot.remaining) + int(lot.held)}"
                )
            # A return before vesting voids the hold and re-pends the rest: what the re-pends
            # did not restore was reversed without a posted transfer.
            repended = flow.get("pended", 0) - flow.get("first_hold_amount", 0)
            said = {**flow, "reversed": flow.get("reversed", 0) + flow.get("voided", 0) - repended}
            for bucket in ("consumed", "expired", "reversed"):
                if said.get(bucket, 0) != int(lot._mapping[bucket]):
                    problems.append(
                        f"lot {lot.id}: {bucket} is {lot._mapping[bucket]}, "
                        f"transfers say {said.get(bucket, 0)}"
                    )
            if flow.get("held", 0) != int(lot.held):
                problems.append(
                    f"lot {lot.id}: held is {lot.held}, open holds say {flow.get('held', 0)}"
                )
            backed[int(lot.account_id)]["posted"] += int(lot.remaining) + int(lot.held)
            backed[int(lot.account_id)]["held"] += int(lot.held)
        if flow.get("unknown"):
            problems.append(f"lot {lot.id}: a transfer to an unexpected account")
    for account_id, (kind, _pid, row) in kinds.items():
        if kind != "member":
            continue
        lots_of = backed.get(account_id, {})
        net = int(row.credits_posted) - int(row.debits_posted)
        if lots_of.get("posted", 0) != net:
            problems.append(
                f"account {account_id}: vested lots hold {lots_of.get('posted', 0)}, "
                f"posted balance is {net}"
            )
        if lots_of.get("pending", 0) != int(row.credits_pending):
            problems.append(
                f"account {account_id}: pending lots hold {lots_of.get('pending', 0)}, "
                f"pending balance is {row.credits_pending}"
            )
        if lots_of.get("held", 0) != int(row.debits_pending):
            problems.append(
                f"account {account_id}: held {lots_of.get('held', 0)}, "
                f"debits pending {row.debits_pending}"
            )
    return problems


def system_balances(conn: Connection, program_id: int) -> dict[str, int]:
    """Net balance of each system account (credits - debits), summed on demand; a
    partner's settlement accounts as `kind:partner`."""
    out: dict[str, int] = {}
    for row in conn.execute(
        select(accounts.c.id, accounts.c.kind, accounts.c.partner).where(
            accounts.c.program_id == program_id, accounts.c.member_id.is_(None)
        )
    ):
        credits = conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                transfers.c.credit_account_id == row.id, transfers.c.phase.in_(POSTED)
            )
        ).scalar_one()
        debits = conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                transfers.c.debit_account_id == row.id, transfers.c.phase.in_(POSTED)
            )
        ).scalar_one()
        name = str(row.kind) if row.partner is None else f"{row.kind}:{row.partner}"
        out[name] = int(credits) - int(debits)
    return out
