"""Kaf: a small, fast, single-node event store served over HTTP."""

__version__ = "0.1.0"
