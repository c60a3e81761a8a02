"""Trofast: a self-hostable loyalty-program platform."""

__version__ = "0.1.0"
