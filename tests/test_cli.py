"""One CLI: every user-facing command is ``faceverify <command>``, each a module inside the
package; the checkout's ``python -m train/eval/serve/data_prep`` run the same mains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceverify.cli import SUBCOMMANDS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package_only(tmp_path_factory) -> dict:
    """An environment in which, of the checkout, only the faceverify package is importable (as
    after an install): the checkout's train/, eval/, serve/, data_prep/ and bench/ are not."""
    root = tmp_path_factory.mktemp("site")
    (root / "faceverify").symlink_to(REPO / "faceverify", target_is_directory=True)
    return dict(os.environ, PYTHONPATH=str(root))


def run_python(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd="/", env=env, capture_output=True, text=True, timeout=300)


def test_export_and_gallery_are_faceverify_commands(package_only):
    def faceverify(*args: str) -> subprocess.CompletedProcess:  # the console script's path: faceverify.cli.main
        return run_python(package_only, "-m", "faceverify", *args)

    top = faceverify("--help")
    assert top.returncode == 0
    for name in ("prep", "train", "eval", "export", "serve", "gallery", "verify"):
        assert f"\n  {name} " in top.stdout, top.stdout

    export = faceverify("export", "--help")
    assert export.returncode == 0, export.stderr
    assert export.stdout.startswith("usage: faceverify export") and "--opset" in export.stdout

    gallery = faceverify("gallery", "--help")
    assert gallery.returncode == 0, gallery.stderr
    assert gallery.stdout.startswith("usage: faceverify gallery") and "fit-pca" in gallery.stdout
    fit = faceverify("gallery", "fit-pca", "--help")
    assert fit.returncode == 0 and fit.stdout.startswith("usage: faceverify gallery fit-pca") and "--components" in fit.stdout
    unknown = faceverify("gallery", "shrink")
    assert unknown.returncode == 2 and "unknown command 'shrink'" in unknown.stderr


def test_every_command_lives_in_the_package_and_answers_help(package_only):
    assert all(module.startswith("faceverify.") for module, _ in SUBCOMMANDS.values()), SUBCOMMANDS
    # one process for all of them (each --help exits through argparse's SystemExit)
    script = (
        "import contextlib, io, json, sys\n"
        "from faceverify.cli import SUBCOMMANDS, main\n"
        "seen = {}\n"
        "for name in SUBCOMMANDS:\n"
        "    buf = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(buf):\n"
        "            code = main([name, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        "    seen[name] = [code, buf.getvalue().splitlines()[0] if buf.getvalue() else '']\n"
        "print(json.dumps(seen))\n"
    )
    proc = run_python(package_only, "-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(seen) == set(SUBCOMMANDS)
    for name, (code, first_line) in seen.items():
        assert code == 0 and first_line.startswith(f"usage: faceverify {name}"), (name, code, first_line)


def test_checkout_entry_points_are_the_library_mains():
    import data_prep.__main__
    import eval.__main__
    import serve.__main__
    import train.__main__
    from faceverify.commands import eval as eval_command
    from faceverify.commands import prep as prep_command
    from faceverify.commands import serve as serve_command
    from faceverify.commands import train as train_command

    assert train.__main__.main is train_command.main
    assert eval.__main__.main is eval_command.main
    assert serve.__main__.main is serve_command.main
    assert data_prep.__main__.main is prep_command.main
    # thin: an import and the call, nothing else
    for folder in ("train", "eval", "serve", "data_prep"):
        code = [line for line in (REPO / folder / "__main__.py").read_text().splitlines() if line.strip()]
        assert len(code) <= 8, (folder, code)
