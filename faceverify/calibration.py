"""The calibration file (``calibration.json`` beside a model): the cosine thresholds of the
operating points, measured by ``faceverify eval lfw-view1`` (``measure``, ``write``), read by the
Verifier (``Calibration.for_model``), and how a verdict's threshold is chosen from it
(``Calibration.threshold``)::

    {"metric": "cosine", "flip": "none", "model": "default", "source": "...",
     "thresholds": {"far_1e-2": t, "far_1e-3": t, "far_1e-4": t, "best_accuracy": t},
     "default_operating_point": "far_1e-3", "genuine_pairs": n, "impostor_pairs": n, "tar_at_far": {...}, "note": "..."}

Accept when similarity > threshold.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, InvalidInputError, UnknownOperatingPointError
from .models import CALIBRATION_FILE, ModelRef, resolve_model

log = logging.getLogger(__name__)

CALIBRATION_FARS = (1e-2, 1e-3, 1e-4)  # the far_* operating points
OPERATING_POINTS = ("far_1e-2", "far_1e-3", "far_1e-4", "best_accuracy")
DEFAULT_OPERATING_POINT = "far_1e-3"
# Used only when a model has no calibration.json: a cosine threshold with no statistical meaning,
# reported as source "uncalibrated_default" so nobody mistakes it for a calibrated one.
UNCALIBRATED_THRESHOLD = 0.5
DEFAULT_POINT_TOLERANCE = 0.01  # a default may cost at most 1 point of DevTest accuracy against the best threshold


@dataclass
class ThresholdChoice:
    value: float
    source: str  # "calibration" | "request" | "uncalibrated_default"
    operating_point: str | None = None
    file: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "operating_point": self.operating_point, "file": self.file}


@dataclass
class Calibration:
    """Thresholds on the cosine similarity, as read from a model's ``calibration.json``."""

    thresholds: dict[str, float] = field(default_factory=dict)
    metric: str = "cosine"
    flip: str | None = None
    path: Path | None = None
    default: str | None = None  # the operating point chosen on View 1 (``default_operating_point``)
    tar_at_far: dict[str, float] = field(default_factory=dict)  # {"1e-3": TAR}: what each FAR point keeps

    @property
    def default_operating_point(self) -> str:
        """The operating point a verdict uses when none is asked for."""
        return self.default or DEFAULT_OPERATING_POINT

    def operating_points(self) -> list[dict]:
        """The calibrated operating points, for a client to offer and explain: ``name``,
        ``threshold``, ``far`` (the false-accept rate it was set at; None for ``best_accuracy``)
        and ``tar`` (the share of same-person pairs above it, when the calibration measured it)."""
        names = [p for p in OPERATING_POINTS if p in self.thresholds] + [p for p in self.thresholds if p not in OPERATING_POINTS]
        out = []
        for name in names:
            far = name[4:] if name.startswith("far_") else None
            out.append({"name": name, "threshold": self.thresholds[name], "far": float(far) if far else None,
                        "tar": self.tar_at_far.get(far) if far else None})
        return out

    @classmethod
    def for_model(cls, model: str | Path | ModelRef) -> "Calibration":
        """The calibration beside ``model`` (any spec ``resolve_model`` takes); an empty one, with a
        warning, when there is none; a ConfigError for a file that is not a calibration."""
        path = resolve_model(model).calibration_file
        if not path.is_file():
            log.warning("model %s has no %s: verdicts use the uncalibrated default threshold %.2f",
                        model, CALIBRATION_FILE, UNCALIBRATED_THRESHOLD)
            return cls()
        try:
            data = json.loads(path.read_text())
            thresholds = {str(k): float(v) for k, v in data["thresholds"].items() if v is not None}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a valid calibration file ({exc}); expected "
                              '{"metric": "cosine", "thresholds": {"far_1e-3": t, ...}}.') from exc
        if data.get("metric", "cosine") != "cosine":
            raise ConfigError(f"{path}: metric {data.get('metric')!r} is not supported (the service compares cosine similarities).")
        if not all(np.isfinite(v) for v in thresholds.values()):
            raise ConfigError(f"{path}: thresholds must be finite numbers.")
        default = data.get("default_operating_point")
        if default is not None and default not in thresholds:
            raise ConfigError(f"{path}: default_operating_point {default!r} has no threshold in the file.")
        tar = {str(k): float(v) for k, v in (data.get("tar_at_far") or {}).items() if isinstance(v, (int, float))}
        return cls(thresholds, "cosine", data.get("flip"), path, default, tar)

    def threshold(self, override: float | None = None, operating_point: str | None = None) -> ThresholdChoice:
        """The cosine threshold a verdict uses: ``override`` if given, else the calibrated one of
        ``operating_point`` (default: the file's ``default_operating_point``, else
        ``far_1e-3``), else the uncalibrated default 0.5 (said so in ``.source``). Raises
        ``UnknownOperatingPointError`` for a name it does not know."""
        if override is not None:
            if not isinstance(override, (int, float, np.number)) or not np.isfinite(override):
                raise InvalidInputError(f"threshold {override!r} is not a finite number.", field="threshold")
            return ThresholdChoice(float(override), "request")
        point = operating_point or self.default_operating_point
        if point not in OPERATING_POINTS and point not in self.thresholds:
            raise UnknownOperatingPointError(f"unknown operating point {point!r}; choose one of {list(OPERATING_POINTS)}.")
        if point in self.thresholds:
            file = self.path.name if self.path else None  # a name, never a server path
            return ThresholdChoice(self.thresholds[point], "calibration", point, file)
        return ThresholdChoice(UNCALIBRATED_THRESHOLD, "uncalibrated_default", point, None)


def _far_key(far) -> str:
    return f"{float(far):.0e}".replace("e-0", "e-")  # 0.001 -> "1e-3"


def measure(vectors: np.ndarray, identities: list[str], flip: str, best_accuracy: float, source: str, model: str) -> dict:
    """A calibration on the score the service computes (cosine of the flip-combined features, no
    centring): FAR 1e-2 / 1e-3 / 1e-4 from *every* different-identity pair of the evaluated images
    (``vectors``, one row per image, ``identities`` its labels), and the best-accuracy threshold
    of the listed pairs (measured by the caller)."""
    from .evaluation.lfw import all_pairs_tar_at_far  # here, not at the top: reading a calibration needs no evaluation code

    wide = all_pairs_tar_at_far(vectors, identities, fars=CALIBRATION_FARS)
    thresholds = {f"far_{_far_key(k)}": at.threshold for k, at in wide["tar_at_far"].items()}
    return {
        "metric": "cosine", "flip": flip, "model": model, "source": source,
        "thresholds": {**thresholds, "best_accuracy": best_accuracy},
        "genuine_pairs": wide["genuine_pairs"], "impostor_pairs": wide["impostor_pairs"],
        "tar_at_far": {_far_key(k): at.tar for k, at in wide["tar_at_far"].items()},
        "note": (f"accept when cosine > threshold; far_* thresholds: empirical impostor quantiles over all "
                 f"{wide['impostor_pairs']} different-identity pairs of the {len(vectors)} images; best_accuracy: "
                 "the best-accuracy threshold of the listed development pairs"),
    }


def default_operating_point(accuracy_at: dict[str, float], best: float) -> str:
    """The strictest FAR operating point whose View 1 DevTest accuracy is within
    DEFAULT_POINT_TOLERANCE of the best threshold's (else the most accurate one): what the service
    uses when a request names none."""
    fars = sorted((p for p in accuracy_at if p.startswith("far_")), key=lambda p: float(p[4:]))  # strictest first
    for point in fars:
        if accuracy_at[point] >= best - DEFAULT_POINT_TOLERANCE:
            return point
    return max(fars, key=lambda p: accuracy_at[p])


def write(path: str | Path, calibration: dict) -> Path:
    """Write a calibration (``measure``'s dict) as strict JSON, atomically."""
    from .evaluation.report import write_json  # the reports' atomic, NaN-free writer (loaded only when writing)

    return write_json(path, calibration)
