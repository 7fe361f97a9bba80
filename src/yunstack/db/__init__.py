"""Persistence: tables, the engine and migrations.  Only services import this package."""
