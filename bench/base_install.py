"""The base install as a user gets it: ``python -m bench.base_install [--out DIR]``.

Builds the wheel from the checkout, creates a new venv, ``pip install``s the wheel with its
declared dependencies from the configured package index (nothing from the development `.venv`),
then checks what the lean-runtime promise says:

- no torch (nor torchvision, facenet-pytorch) in the venv;
- the venv's size on disk (bytes of every file, the venv's own pip included);
- from a folder outside the checkout, with an empty HOME and every proxy refused (offline),
  ``faceverify verify`` gives "same" for two photos of Colin Powell and "different" for Powell and
  Serena Williams, with the shipped calibration, and ``faceverify serve`` answers ``/health``.

Writes ``base_install.json`` and ``base_install.md`` into ``--out`` (default: a new temporary
folder). Needs the package index (the only network use) and the shared LFW images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from faceverify.paths import lfw_root  # noqa: E402

ABSENT = ("torch", "torchvision", "facenet_pytorch")
PAIRS = {"same": ("Colin_Powell/Colin_Powell_0001.jpg", "Colin_Powell/Colin_Powell_0002.jpg"),
         "different": ("Colin_Powell/Colin_Powell_0001.jpg", "Serena_Williams/Serena_Williams_0001.jpg")}


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root`` (symlinks not followed: the venv's python link counts 0)."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def step(argv: list, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(str(a) for a in argv), flush=True)
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"failed ({done.returncode}): {' '.join(str(a) for a in argv)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done


def offline_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FACEVERIFY_", "VIRTUAL_ENV"))}
    refused = "http://127.0.0.1:9"
    env.update(HOME=str(home), http_proxy=refused, https_proxy=refused, HTTP_PROXY=refused, HTTPS_PROXY=refused,
               no_proxy="127.0.0.1,localhost")
    return env


def serve_health(faceverify: Path, cwd: Path, env: dict) -> dict:
    """``faceverify serve`` of the install, from ``cwd`` with its default model: its /health."""
    from bench.load_service import Server

    server = Server(None, cwd / "gallery", command=[str(faceverify)], cwd=cwd, env=env, timeout=180)
    try:
        return server.health()
    finally:
        server.stop()


def source_packages() -> list[str]:
    """Every top-level folder of the checkout that could pass for a package."""
    return [p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]


def build_wheel(work: Path) -> Path:
    """``pip wheel --no-deps .``, built offline from a copy of the checkout's sources (every
    top-level package folder), so the build leaves no build/ or egg-info behind in the checkout."""
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in source_packages():
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "RESULTS.*"))
    step([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
          "-q", "-w", work / "dist", src], timeout=600)
    (built,) = (work / "dist").glob("faceverify-*.whl")
    return built


def measure(work: Path, images: Path) -> dict:
    t0 = time.monotonic()
    wheel = build_wheel(work)
    venv = work / "venv"
    step([sys.executable, "-m", "venv", venv])
    python, faceverify = venv / "bin" / "python", venv / "bin" / "faceverify"
    t_install = time.monotonic()
    step([python, "-m", "pip", "install", "-q", wheel], timeout=1800)
    install_s = time.monotonic() - t_install
    present = step([python, "-c", "import importlib.util as u, json; print(json.dumps([m for m in %r if u.find_spec(m)]))" % (ABSENT,)])
    size = tree_bytes(venv)
    largest = step([python, "-c", (
        "import importlib.metadata as m, json, pathlib; out = {}\n"
        "for d in m.distributions():  # a venv's lib64 -> lib link lists each distribution twice\n"
        "    n = sum((pathlib.Path(d.locate_file(f)).stat().st_size for f in (d.files or []) if pathlib.Path(d.locate_file(f)).is_file()))\n"
        "    out[d.metadata['Name']] = n\n"
        "print(json.dumps(sorted(((n, k) for k, n in out.items()), reverse=True)[:8]))")])
    home, elsewhere = work / "home", work / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    env = offline_env(home)
    verdicts = {}
    for name, (a, b) in PAIRS.items():
        out = step([faceverify, "verify", images / a, images / b], cwd=elsewhere, env=env)
        verdicts[name] = json.loads(out.stdout)
    health = serve_health(faceverify, elsewhere, env)
    return {
        "wheel": wheel.name, "wheel_bytes": wheel.stat().st_size,
        "venv_bytes": size, "venv_gb": round(size / 1e9, 3),
        "largest_distributions_mb": [[name, round(n / 1e6, 1)] for n, name in json.loads(largest.stdout)],
        "absent_checked": list(ABSENT), "present_of_absent": json.loads(present.stdout),
        "pip_install_s": round(install_s, 1), "total_s": round(time.monotonic() - t0, 1),
        "verify": {name: {k: v.get(k) for k in ("same_person", "similarity", "threshold")} | {"source": v["threshold_source"]["source"]}
                   for name, v in verdicts.items()},
        "verdicts_right": verdicts["same"]["same_person"] is True and verdicts["different"]["same_person"] is False,
        "health_model": health.get("model", {}).get("id"),
        "python": sys.version.split()[0],
    }


def report(res: dict) -> str:
    ok = not res["present_of_absent"] and res["venv_gb"] <= 1.0 and res["verdicts_right"] and res["health_model"] == "default"
    lines = ["# Base install (`python -m bench.base_install`)", "",
             f"- venv on disk: **{res['venv_gb']:.3f} GB** ({res['venv_bytes']:,} bytes; goal <= 1.0 GB)",
             f"- wheel: {res['wheel']} ({res['wheel_bytes'] / 1e6:.1f} MB); pip install {res['pip_install_s']} s",
             f"- torch-only packages present: {res['present_of_absent'] or 'none'} (checked: {', '.join(res['absent_checked'])})",
             "- largest distributions (MB): " + ", ".join(f"{n} {mb}" for n, mb in res["largest_distributions_mb"]),
             "- offline, outside the checkout: " + "; ".join(
                 f"{k}: same_person={v['same_person']} (similarity {v['similarity']:.3f}, threshold {v['threshold']:.3f}, {v['source']})"
                 for k, v in res["verify"].items()),
             f"- `faceverify serve` /health model: {res['health_model']}",
             f"- all checks: {'passed' if ok else 'FAILED'}", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for base_install.json/.md (default: a new temporary folder)")
    args = p.parse_args()
    images = lfw_root() / "images"
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="faceverify-base-install-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="faceverify-venv-") as tmp:
        try:
            res = measure(Path(tmp), images)
        except RuntimeError as e:  # a failed step: its command and output
            print(e, file=sys.stderr)
            return 1
    (out / "base_install.json").write_text(json.dumps(res, indent=2) + "\n")
    text = report(res)
    (out / "base_install.md").write_text(text)
    print(text)
    print(f"wrote {out}/base_install.json and base_install.md")
    return 0 if "passed" in text else 1


if __name__ == "__main__":
    sys.exit(main())
