"""Fixtures for the control plane's tests: the throwaway PostgreSQL cluster (tests/postgres.py)."""

from __future__ import annotations

from tests.postgres import postgres_cluster

__all__ = ["postgres_cluster"]
