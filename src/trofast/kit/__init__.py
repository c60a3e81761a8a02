"""Shared plumbing: database, errors, clock, auth, pagination."""
