"""Households: members who share a view of their points and may transfer among themselves."""
