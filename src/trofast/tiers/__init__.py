"""Tiers and status: qualification, upgrades at once, period-end downgrades, history."""
