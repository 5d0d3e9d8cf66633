"""Shared test fixtures: real data from the shared data root (FACEVERIFY_DATA or ../shared/data)."""

from __future__ import annotations

import pytest

from faceverify.paths import data_root


@pytest.fixture(scope="session")
def data_dir():
    return data_root()  # raises DataNotFoundError with the places it looked


@pytest.fixture(scope="session")
def lfw_images(data_dir):
    return data_dir / "lfw" / "images"


@pytest.fixture(scope="session")
def detector():
    from faceverify.detect import FaceDetector

    return FaceDetector()
