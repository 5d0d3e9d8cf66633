"""What an install puts on a machine: the wheel holds the ``faceverify`` package and the shipped
models (``faceverify_models``, the checkout's ``models/``) and nothing else (no generic top-level
``train``/``eval``/``serve``/``bench``/``data_prep``); installed into a fresh venv, it verifies,
loads and serves from a folder outside the checkout, offline; and the set-up's environment
satisfies every requirement in faceverify's dependency closure, the condition under which pip's
resolver prints no ``ERROR:`` line."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps .``, built offline from a copy of the checkout's sources (every
    top-level folder that could pass for a package), so the build leaves no build/ or egg-info
    behind in the checkout."""
    from bench.base_install import build_wheel, source_packages

    assert {"faceverify", "models", "train", "eval", "serve", "data_prep", "bench"} <= set(source_packages())
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_the_package_and_the_shipped_models_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"faceverify", "faceverify_models"}, top
    # the library's commands, the demo page and the one console script are in it
    for module in ("faceverify/cli.py", "faceverify/training/loop.py", "faceverify/commands/train.py", "faceverify/commands/eval.py",
                   "faceverify/commands/serve.py", "faceverify/commands/prep.py", "faceverify/static/index.html"):
        assert module in names, module
    assert not [n for n in names if "pg_cluster" in n or n.endswith((".orig", ".rej", ".bak"))]  # test-only code stays out
    # the default model travels with the install: what it needs to run, not its training record
    shipped = {n.removeprefix("faceverify_models/") for n in names if n.startswith("faceverify_models/")}
    assert {"default/model.pt", "default/MODEL.json", "default/calibration.json", "dlib/MODEL.json"} <= shipped
    assert not [n for n in shipped if n.startswith(("default/report/", "default/training/"))], shipped
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


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into a new venv (``pip install --no-index --no-deps``), whose
    dependencies are the set-up's, made visible by a .pth file (nothing fetched), and an
    environment that keeps the checkout out of reach: no PYTHONPATH, a folder outside the checkout,
    an empty HOME (no cache to lean on) and proxies that refuse every connection (offline)."""
    import sysconfig

    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps",
                              "--disable-pip-version-check", "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # paths in a .pth file are appended to sys.path after the venv's own: the installed faceverify
    # wins over the checkout's editable one (whose own .pth hook is not run from an appended path)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "faceverify_test_deps.pth").write_text("\n".join(deps) + "\n")
    home, work = tmp / "home", tmp / "elsewhere"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FACEVERIFY_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="127.0.0.1,localhost")
    return {"python": python, "faceverify": venv / "bin" / "faceverify", "cwd": work, "env": env}


def run_installed(installed: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # builds and installs the wheel, loads the model three times, starts a server
def test_the_installed_wheel_verifies_loads_and_serves_outside_the_checkout(installed, lfw_images):
    from service_fixtures.server import LiveServer

    where = run_installed(installed, installed["python"], "-c",
                          "import faceverify, faceverify.paths as p; print(faceverify.__file__); print(p.DEFAULT_MODEL_DIR)")
    assert where.returncode == 0, where.stderr[-3000:]
    package, model_dir = where.stdout.split()
    venv = installed["python"].parent.parent
    assert Path(package).is_relative_to(venv) and Path(model_dir).is_relative_to(venv), where.stdout  # not the checkout's
    assert Path(model_dir).name == "default" and Path(model_dir).parent.name == "faceverify_models"

    powell = lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg"
    verdicts = {}
    for name, other in (("same", lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg"),
                        ("different", lfw_images / "Serena_Williams" / "Serena_Williams_0001.jpg")):
        run = run_installed(installed, installed["faceverify"], "verify", powell, other)
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        verdicts[name] = json.loads(run.stdout)  # the CLI prints one JSON object
        assert verdicts[name]["threshold_source"]["source"] == "calibration"
    assert verdicts["same"]["same_person"] is True and verdicts["different"]["same_person"] is False

    api = run_installed(installed, installed["python"], "-c", (
        "import json, sys; from faceverify import Verifier; v = Verifier.from_model(); "
        "r = v.verify(sys.argv[1], sys.argv[2]); print(json.dumps([v.model_id, r['similarity'], r['same_person']]))"),
        powell, lfw_images / "Colin_Powell" / "Colin_Powell_0002.jpg")
    assert api.returncode == 0, api.stderr[-3000:]
    model_id, similarity, same = json.loads(api.stdout)
    assert model_id == "default" and same is True and similarity == pytest.approx(verdicts["same"]["similarity"], abs=1e-5)

    server = LiveServer(None, "gallery", command=[str(installed["faceverify"])], cwd=installed["cwd"],
                        env={k: installed["env"].get(k) for k in {*os.environ, *installed["env"]}}, log_dir=installed["cwd"])
    with server:
        health = httpx.get(server.url + "/health", timeout=30)
        assert health.status_code == 200 and health.json()["model"]["id"] == "default", health.text
        assert (installed["cwd"] / "gallery").is_dir()  # the default gallery: ./gallery of the folder it runs in


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
