"""Shared helpers for the service tests: the served model (the shipped ``models/default``), a real
uvicorn server in a subprocess, image fixtures made from real photos, and a throw-away PostgreSQL
cluster (test-only code, kept out of the installed package)."""
