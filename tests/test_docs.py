"""Docs true to the code, and tracked files free of machine paths and leftovers: no tracked file
holds this checkout's absolute path or is a merge/editor leftover (``*.orig``, ``*.rej``, ``*.bak``), no doc or comment cites one of this project's issue numbers (they mean
nothing to a reader), and what the docs name — files and modules, the packed set's keys, failure
reasons, operating points, the default model's figures — is what the code and model files hold."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceverify.paths import DEFAULT_MODEL_DIR, data_root, display_command, display_path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".ini"}


def tracked_files() -> list[Path]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO / name for name in result.stdout.decode().split("\0") if name and (REPO / name).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")  # NUL: a binary file


def doc(name: str) -> str:
    return (REPO / name).read_text()


def test_no_tracked_file_holds_the_checkouts_absolute_path():
    files = tracked_files()
    assert len(files) > 100 and REPO / "README.md" in files
    found = [str(p.relative_to(REPO)) for p in files if (text := text_of(p)) is not None and str(REPO) in text]
    assert not found, f"{found} name {REPO}: write paths through faceverify.paths.display_path"
    # nor any machine's home or work tree, in what ships as documentation, models and reports
    machine = re.compile(r"(?<![\w.$])/(?:work|root|home|Users)/\w")
    shipped = [p for p in files if p.suffix in {".md", ".json", ".yaml", ".csv"} and "tests" not in p.parts]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in shipped for m in [machine.search(p.read_text())] if m]
    assert not found, found


LEFTOVER_SUFFIXES = (".orig", ".rej", ".bak")  # what merges, patch and editors leave behind


def test_no_merge_or_editor_leftover_is_tracked():
    files = tracked_files()
    assert REPO / "README.md" in files  # the listing is real
    leftovers = sorted(str(p.relative_to(REPO)) for p in files if p.name.endswith(LEFTOVER_SUFFIXES))
    assert not leftovers, f"{leftovers}: merge or editor leftovers; git rm them"


def test_reports_show_paths_without_the_machine_layout():
    assert display_path(REPO / "models" / "default") == "models/default"
    assert display_path(data_root() / "lfw" / "pairs.txt") == "$FACEVERIFY_DATA/lfw/pairs.txt"
    assert display_path("/somewhere/else/run/model.pt") == "model.pt"
    argv = ["lfw", "--model", str(REPO / "models" / "default"), f"--out={REPO / 'runs' / 'x'}",
            "--landmarks", str(data_root() / "lfw" / "lfw_landmark.txt"), "--flip", "sum", "relative/dir"]
    shown = display_command(argv)
    assert shown == ("lfw --model models/default --out=runs/x --landmarks '$FACEVERIFY_DATA/lfw/lfw_landmark.txt' "
                     "--flip sum relative/dir")
    assert str(REPO) not in shown and str(data_root()) not in shown


# a numbered issue of this project (the word issue or a hash, then its number); another
# repository's is written owner/repo#N, GitHub's own notation
ISSUE_NUMBER = re.compile(r"(?i)\bissues?\s+#?\d+|(?<![\w/.-])#\d+\b")


def test_docs_and_comments_name_no_issue_numbers():
    files = [p for p in tracked_files() if p.suffix in TEXT_SUFFIXES or p.name in ("Makefile", "Dockerfile")]
    assert REPO / "docs" / "service.md" in files and REPO / "faceverify" / "verify.py" in files
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()[:100]}" for p in files
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if ISSUE_NUMBER.search(line)]
    assert not found, "\n".join(found)
    number = "12"  # kept out of the literals, or this file would cite an issue itself
    assert ISSUE_NUMBER.search(f"fixed in issue {number}") and ISSUE_NUMBER.search(f"see #{number}")  # the rule bites
    assert not ISSUE_NUMBER.search("wy1iu/sphereface#60")


def test_files_and_modules_the_docs_name_exist():
    named = set()
    for path in DOCS:
        text = path.read_text()
        named |= set(re.findall(r"`((?:faceverify|tests|scripts|train|eval|serve|bench|data_prep)/[\w./-]*\w)`", text))
        # modules: faceverify.module.name and python -m faceverify.module (not metadata keys like faceverify.template)
        for dotted, run in re.findall(r"\bfaceverify\.([a-z_]+)\.\w|-m faceverify\.([a-z_]+)", text):
            named.add(f"faceverify/{dotted or run}")
    assert len(named) > 30
    missing = sorted(n for n in named if not ((REPO / n).exists() or (REPO / f"{n}.py").exists()))
    assert not missing, missing


def test_the_packed_set_is_as_documented(tmp_path, data_dir):
    """architecture.md lists the manifest's and each shard's keys and the failure reasons: a real
    `prepare_dataset` run on two photos, a blank picture and a truncated JPEG writes exactly those."""
    from faceverify.prep import prepare_dataset

    person = tmp_path / "src" / "Colin_Powell"
    person.mkdir(parents=True)
    for n in (1, 2):
        name = f"Colin_Powell_000{n}.jpg"
        (person / name).symlink_to(data_dir / "lfw" / "images" / "Colin_Powell" / name)
    Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(person / "blank.png")
    (person / "truncated.jpg").write_bytes((person / "Colin_Powell_0001.jpg").read_bytes()[:200])
    dst = tmp_path / "packed"
    summary = prepare_dataset(tmp_path / "src", dst, progress=False)
    assert summary["images_kept"] == 2 and summary["images_failed"] == 2

    text = doc("docs/architecture.md")
    block = text[text.index("## The packed training set"):]

    def documented_keys(start: str, end: str) -> set[str]:
        part = block[block.index(start):block.index(end)]
        return set(re.findall(r'"(\w+)":', part))

    manifest = json.loads((dst / "manifest.json").read_text())
    assert documented_keys("manifest.json", "shards/000000.npy") == set(manifest)
    shard = json.loads((dst / "shards" / "000000.json").read_text())
    assert documented_keys("shards/000000.json", "failures.csv") == set(shard)
    with (dst / "failures.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    failures_line = next(line for line in block.splitlines() if "failures.csv" in line)
    assert ",".join(rows[0]) in failures_line  # the header, path,reason,detail
    reasons = {r[1] for r in rows[1:]}
    assert reasons == {"no_face", "unreadable_image"}
    readme_prep = doc("README.md").split("## Data preparation", 1)[1].split("\n## ", 1)[0]
    for reason in reasons:
        assert reason in failures_line and f"`{reason}`" in readme_prep, reason
    assert set(summary) >= {"identities", "images_total", "images_kept", "images_failed", "failures_by_reason",
                            "alignment_sources", "images_per_s"}


def test_operating_points_are_the_ones_served_and_calibrated():
    from faceverify.calibration import DEFAULT_OPERATING_POINT, OPERATING_POINTS

    table = doc("docs/service.md").split("| `operating_point` | threshold |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([\w.-]+)`( \(default\))?", table, re.M)
    assert [name for name, _ in documented] == list(OPERATING_POINTS)
    assert [name for name, default in documented if default] == [DEFAULT_OPERATING_POINT]
    calibration = json.loads((DEFAULT_MODEL_DIR / "calibration.json").read_text())
    assert set(calibration["thresholds"]) == set(OPERATING_POINTS)


def test_the_default_models_figures_in_the_docs_are_its_own():
    calibration = json.loads((DEFAULT_MODEL_DIR / "calibration.json").read_text())
    card = json.loads((DEFAULT_MODEL_DIR / "MODEL.json").read_text())
    readme = " ".join(doc("README.md").split())  # line breaks are spaces
    impostors = f"{calibration['impostor_pairs']:,}"
    for name in ("README.md", "docs/service.md", "docs/architecture.md"):
        assert impostors in doc(name), name
    images = round((1 + (1 + 8 * (calibration["impostor_pairs"] + calibration["genuine_pairs"])) ** 0.5) / 2)
    assert f"{impostors} different-identity pairs of the {images:,} View 1 images" in readme
    point = calibration.get("default_operating_point", "far_1e-3")  # what `make demo` compares against
    assert f"threshold {calibration['thresholds'][point]:.3f} = FAR {point[4:]}" in readme
    view2 = card["lfw_view2"]
    assert f"{100 * view2['accuracy_mean']:.2f}% ± {100 * view2['accuracy_std']:.2f}" in readme
    assert f"{100 * card['lfw_view1_devtest']:.2f}%" in readme
