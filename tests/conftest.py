"""Shared test fixtures: real data from the shared data root (FACEVERIFY_DATA or ../shared/data).

Tiers: ``make test`` runs everything; ``make test-fast`` runs ``-m "not slow"``, which leaves out
every test that trains a network or waits on a long start-up. Tests are ``slow`` by an explicit
``@pytest.mark.slow`` (training runs, the LFW run, bench, server start-ups, the deepest networks)
or, below, by the fixtures they use (PostgreSQL).

Verdicts (same person accepted, different people rejected, thresholds, identify ranks) are judged
with ``served_model``, the shipped ``models/default``: never with a model trained during the run,
whose accuracy depends on the machine (tests/service_fixtures/model.py says why).
"""

from __future__ import annotations

import os

import pytest

from faceverify.paths import data_root


SLOW_FIXTURES = {"pg_cluster"}  # a PostgreSQL cluster


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_dir():
    return data_root()  # raises DataNotFoundError with the places it looked


@pytest.fixture(scope="session")
def lfw_images(data_dir):
    return data_dir / "lfw" / "images"


@pytest.fixture(scope="session")
def served_model():
    """The model directory the service and verdict tests serve: the shipped models/default."""
    from service_fixtures.model import served_model

    return served_model()


@pytest.fixture(scope="session")
def detector():
    from faceverify.detect import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throw-away PostgreSQL cluster (tests/service_fixtures/pg_cluster.py). Missing binaries fail
    the run when root (CI runs `make test` as root after `scripts/setup.sh --test`, which installs
    them); without root and without binaries the PostgreSQL tests are skipped, with the reason."""
    from service_fixtures.pg_cluster import PostgresCluster, find_bindir, missing_reason

    reason = missing_reason()
    if reason:
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = PostgresCluster(find_bindir()).init()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def gallery_store(request, tmp_path):
    """A fresh, empty gallery location for each storage back-end: a directory (SQLite) or the URL
    of a new database in the test cluster (PostgreSQL)."""
    if request.param == "sqlite":
        return tmp_path / "gallery"
    return request.getfixturevalue("pg_cluster").new_database()
