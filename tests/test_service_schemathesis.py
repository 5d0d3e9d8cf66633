"""Property-based fuzzing of the live server's OpenAPI with schemathesis: no 5xx, and responses
conform to the documented status codes, schemas, content types and Allow headers."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from service_fixtures.server import API_KEY, LiveServer
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # a server start-up

# Everything schemathesis checks except positive_data_acceptance: a schema cannot say "a photo with
# a face", so schema-valid random bytes are (correctly) refused with 4xx.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def test_schemathesis_finds_no_server_errors(served_model, tmp_path):
    with LiveServer(served_model, tmp_path / "gallery") as srv:
        # a collection to exist, so the gallery routes get past 404 for some generated names
        assert httpx.post(srv.url + "/collections", json={"name": "c1"}, headers=srv.auth).status_code == 201
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", srv.url + "/openapi.json", *CHECKS,
               "--header", f"X-API-Key: {API_KEY}", "--max-examples", "25", "--seed", "20240601", "--workers", "1",
               "--phases", "examples,coverage,fuzzing,stateful", "--no-color"]
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=500)
        report = run.stdout[-6000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert "passed" in run.stdout and "failures" not in run.stdout.split("SUMMARY")[-1].lower(), report
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'status="5' not in metrics  # not one 5xx answered during the run
        assert 'status="422"' in metrics and 'status="415"' in metrics  # it did reach the validation paths
        assert srv.alive() and httpx.get(srv.url + "/health").status_code == 200
    assert "Traceback" not in srv.log_tail(10_000), srv.log_tail()
