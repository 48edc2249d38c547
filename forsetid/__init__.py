"""Forseti for Python: one live OS process per key, across a cluster (the daemon)."""

__version__ = "0.1.0"
