"""Shared helpers for the service tests: a tiny model trained on a few LFW identities, a real
uvicorn server in a subprocess, and image fixtures made from real photos."""
