"""The points ledger: append-only, double-entry, with lots (DESIGN rules 1-5)."""
