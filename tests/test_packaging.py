"""What an install puts on a machine: the wheel holds the ``faceverify`` package and nothing else
(no generic top-level ``train``/``eval``/``serve``/``bench``/``data_prep``), and the set-up's
environment satisfies every requirement in faceverify's dependency closure, the condition under
which pip's resolver prints no ``ERROR:`` line."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_faceverify_package(tmp_path):
    # a copy of the checkout's sources (every top-level folder that could pass for a package), so
    # the build leaves no build/ or egg-info behind in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    candidates = [p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    assert {"faceverify", "train", "eval", "serve", "data_prep", "bench"} <= set(candidates)
    for name in candidates:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "RESULTS.*"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
                            "-q", "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("faceverify-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"faceverify"}, top
    # the library's commands, the demo page and the one console script are in it
    for module in ("faceverify/cli.py", "faceverify/training/loop.py", "faceverify/training/cli.py", "faceverify/evaluation/cli.py",
                   "faceverify/service/cli.py", "faceverify/prep_cli.py", "faceverify/static/index.html"):
        assert module in names, module
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "faceverify = faceverify.cli:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode().splitlines()
    requires = [line for line in metadata if line.startswith("Requires-Dist: facenet-pytorch")]
    # torch's MTCNN is a declared dependency of the [train] extra, not a --no-deps install
    assert requires == ['Requires-Dist: facenet-pytorch==2.5.3; extra == "train"'], requires
    # the base install is the torch-free runtime: MTCNN and the network on onnxruntime
    base = {line.split(":", 1)[1].strip().split(";")[0] for line in metadata if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert not {r for r in base if r.split(">")[0].split("=")[0].split("[")[0] in ("torch", "torchvision", "facenet-pytorch", "onnx",
                                                                                  "onnxscript", "tensorboard")}, base
    assert any(r.startswith("onnxruntime") for r in base)


def unmet_requirements(requirements: list[str]) -> list[str]:
    """Every requirement in the closure of ``requirements`` that the installed distributions do not
    satisfy (what pip's resolver reports as ``ERROR: ... requires X, but you have Y``)."""
    problems, seen = [], set()
    todo = [(Requirement(r), "faceverify") for r in requirements]
    while todo:
        req, by = todo.pop()
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{by} requires {req}, which is not installed")
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{by} requires {req}, but {dist.version} is installed")
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in ("", *req.extras)):
                todo.append((sub, f"{dist.metadata['Name']} {dist.version}"))
    return problems


def test_installed_environment_has_no_dependency_conflict():
    """facenet-pytorch 2.6.0 (torch<2.3, numpy<2, Pillow<10.3) made every set-up print pip's ERROR;
    2.5.3 has the same MTCNN code and weights and no such pins. Re-run `bash scripts/setup.sh` if
    this fails after a pyproject change."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["train"] + project["optional-dependencies"]["dev"]
    assert any(r.startswith("facenet-pytorch") for r in requirements)
    assert unmet_requirements(requirements) == []
    installs = [line for line in (REPO / "scripts" / "setup.sh").read_text().splitlines() if "pip install" in line]
    assert installs and not [line for line in installs if "--no-deps" in line]  # nothing bypasses the resolver
