"""Paid memberships: plans in the program document, their state per member, the lapse job."""
