"""Distillation: views, the teacher-target cache (content-keyed, resumable), the losses, and a
distillation training run end to end — on real AT&T photos plus unlabelled faces, with a real
faceverify checkpoint as the teacher (any Embedder can teach; dlib is covered where installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from faceverify.align import WIDE_160, align_face
from faceverify.training.distill import (DistillFaces, DistillLoss, StudentCrops, TeacherTargets, centred_targets, render_view, select_training_faces, unit_targets,
                                student_view, teacher_view, view_params, views_read)
from faceverify.training.augment import ResumableSampler
from faceverify.loaders import load_embedder
from faceverify.errors import ConfigError, DataNotFoundError
from faceverify.packed import PackedFaces
from faceverify.prep import prepare_dataset
from faceverify.commands.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "train" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def wide_set(tmp_path_factory, data_dir):
    """6 AT&T identities (labelled) + 12 celeba10k photos laid flat (unlabelled), prepared with --wide."""
    root = tmp_path_factory.mktemp("distill")
    att = root / "att"
    att.mkdir()
    for k in range(1, 7):
        (att / f"s{k}").symlink_to(data_dir / "train" / "att_orl" / f"s{k}", target_is_directory=True)
    flat = root / "flat"
    flat.mkdir()
    photos = sorted((data_dir / "train" / "celeba10k").rglob("*.jpg"))[:12]
    for p in photos:
        (flat / p.name).symlink_to(p)
    shutil.copy(photos[0], flat / "duplicate_of_first.jpg")  # byte-identical: must be dropped once
    dst = root / "packed"
    prepare_dataset([att, flat], dst, wide=True, min_score=0.9, progress=False)
    return PackedFaces(dst)


def test_prep_records_wide_canvas_landmarks_and_unlabelled(wide_set):
    faces = wide_set
    assert faces.has_wide and len(faces.sha1) == len(faces)
    assert (faces.labels == -1).sum() >= 10  # the flat folder: no identity
    assert faces.num_classes == 6
    canvas = faces.wide(0)
    assert canvas.shape == (160, 160, 3) and canvas.mean() > 20
    # the student's crop cut from the canvas at view 0 is the template crop of the same face
    direct = faces[0][0][2:-2, 2:-2]  # stored with pad 2
    from_canvas = student_view(canvas, view_params(faces.sha1[0], 0), "112x96")
    assert np.abs(direct.astype(int) - from_canvas.astype(int)).mean() < 12  # two resamplings apart


def test_views_are_deterministic_and_distinct(wide_set):
    key = wide_set.sha1[0]
    assert view_params(key, 0) == view_params(key, 0)
    assert view_params(key, 1).flip and not view_params(key, 0).flip
    assert view_params(key, 2) == view_params(key, 2) and view_params(key, 2) != view_params(key, 3)
    canvas = wide_set.wide(0)
    a, pa = render_view(canvas, view_params(key, 2))
    b, pb = render_view(canvas, view_params(key, 2))
    assert np.array_equal(a, b) and np.allclose(pa, pb)
    _, p0 = render_view(canvas, view_params(key, 0))
    assert np.allclose(p0, WIDE_160)
    flipped = student_view(canvas, view_params(key, 1), "56x48")
    assert np.array_equal(flipped, student_view(canvas, view_params(key, 0), "56x48")[:, ::-1])


def test_teacher_targets_cache_resume_and_key(wide_set, tmp_path):
    teacher = load_embedder(REPO / "models" / "default")
    cache = TeacherTargets(wide_set, str(REPO / "models" / "default"), views=3, chunk=16)
    path = cache.build(workers=1, progress=False)
    targets = np.load(path)
    assert targets.shape == (3, len(wide_set), teacher.feature_dim)
    # view 0 of face i is the teacher's embedding of its own crop of the canvas
    crop = teacher_view(wide_set.wide(5), view_params(wide_set.sha1[5], 0), teacher)
    assert np.allclose(teacher.embed_crops(crop[None])[0], targets[0, 5], atol=1e-4)
    # a kill after some chunks: the missing chunk is recomputed, the rest is kept
    path.unlink()
    out = path.parent
    np.save(out / "chunk_00000.npy", targets[:, :16])
    before = (out / "chunk_00000.npy").stat().st_mtime_ns
    again = np.load(cache.build(workers=1, progress=False))
    assert np.allclose(again, targets, atol=1e-5)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["views"] == 3 and meta["faces"] == len(wide_set) and before > 0
    # another number of views is another cache
    assert TeacherTargets(wide_set, str(REPO / "models" / "default"), views=2).directory != out


def test_views_read_replays_the_runs_sampler():
    indices = np.array([3, 5, 8, 9, 11, 14, 20, 21, 30, 31])
    seed, batch, steps, views = 7, 4, 5, 2  # 2 steps per epoch: 3 epochs, the last one partial
    read = views_read(indices, 40, views, seed, steps, batch)
    expected = np.zeros((views, 40), bool)
    targets = np.zeros((views, 40, 1), np.float32)
    dataset = DistillFaces(None, targets, indices, np.full(len(indices), -1), "56x48", seed=seed)
    sampler = ResumableSampler(range(len(indices)), seed=seed)
    step = 0
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        for b in range(len(keys) // batch):
            if step == steps:
                break
            for position, ep in keys[b * batch:(b + 1) * batch]:
                face = int(indices[position])
                rng = np.random.default_rng((seed, ep, face))  # the dataset's own draw, restated
                expected[int(rng.integers(views)), face] = True
            step += 1
    assert np.array_equal(read, expected)
    assert read.sum() <= steps * batch and not read[:, [0, 1, 2]].any()  # faces outside the run are never asked for
    assert dataset.views == views


def test_sparse_teacher_targets_fill_in_for_a_longer_run(wide_set):
    teacher = str(REPO / "models" / "default")
    cache = TeacherTargets(wide_set, teacher, views=2, chunk=8)
    n = len(wide_set)
    short = np.zeros((2, n), bool)
    short[0, :5] = short[1, 10:12] = True
    first = np.load(cache.build(workers=1, progress=False, needed=short))
    assert np.isfinite(first[:, :, 0]).sum() == short.sum() and np.isfinite(first[short]).all()
    assert json.loads((cache.directory / "meta.json").read_text())["complete"] is False
    # the dataset refuses an entry that was never computed, saying what to do
    dataset = DistillFaces(wide_set, first, np.arange(n), np.full(n, -1), "56x48", seed=0)
    unread = next(i for i in range(n) if not short[:, i].any())
    with pytest.raises(DataNotFoundError, match="shorter run"):
        dataset[(int(np.flatnonzero(np.arange(n) == unread)[0]), 0)]
    # a longer run computes only what is missing; what was there is kept bit for bit
    full = np.load(cache.build(workers=1, progress=False))
    assert np.isfinite(full).all() and np.array_equal(full[short], first[short])
    assert json.loads((cache.directory / "meta.json").read_text())["complete"] is True
    # means over a sparse cache use the computed rows only
    centred, _ = centred_targets(first)
    assert np.isfinite(centred[short]).all()


def test_student_crops_cache_equals_views_and_resumes(wide_set):
    cache = StudentCrops(wide_set, "84x72", views=3, chunk=8)
    path = cache.build(workers=1, progress=False)
    crops = np.load(path)
    assert crops.shape == (3, len(wide_set), 84, 72, 3) and crops.dtype == np.uint8
    for i, view in [(0, 0), (5, 1), (len(wide_set) - 1, 2)]:
        assert np.array_equal(crops[view, i], student_view(wide_set.wide(i), view_params(wide_set.sha1[i], view), "84x72"))
    # a kill while chunk 1 was being written: its marker is missing, so only it is cut again
    partial = path.with_name("crops.partial.npy")
    path.rename(partial)
    (path.parent / "done" / "00001").unlink()
    damaged = np.lib.format.open_memmap(partial, mode="r+")
    damaged[:, 8:16] = 0
    damaged.flush()
    del damaged
    assert np.array_equal(np.load(cache.build(workers=1, progress=False)), crops)
    # the dataset reads the cache: the same crop as rendering the view
    targets = np.zeros((3, len(wide_set), 4), np.float32)
    labels = np.full(len(wide_set), -1)
    cached = DistillFaces(wide_set, targets, np.arange(len(wide_set)), labels, "84x72", crops=path)
    rendered = DistillFaces(wide_set, targets, np.arange(len(wide_set)), labels, "84x72")
    assert torch.equal(cached[(4, 2)][0], rendered[(4, 2)][0])
    assert StudentCrops(wide_set, "56x48", views=3).directory != path.parent


def test_centred_targets_remove_the_shared_direction():
    rng = np.random.default_rng(0)
    shared = np.ones(16) * 3.0
    raw = (shared + rng.normal(size=(2, 200, 16))).astype(np.float32)
    unit = raw / np.linalg.norm(raw, axis=2, keepdims=True)
    assert (unit[0, :100] * unit[0, 100:]).sum(1).mean() > 0.8  # a narrow cone, like dlib's
    centred, mean = centred_targets(raw)
    assert np.allclose(np.linalg.norm(centred, axis=2), 1.0, atol=1e-5)
    assert abs((centred[0, :100] * centred[0, 100:]).sum(1).mean()) < 0.1


def test_distill_loss_terms():
    t = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    loss = DistillLoss(4, 4, cosine=1.0, relational=1.0)
    value, parts = loss(t.clone(), t)
    assert value.item() == pytest.approx(0.0, abs=1e-5) and parts["distill_cos"].item() == pytest.approx(1.0, abs=1e-5)
    value, _ = loss(-t, t)
    assert value.item() > 1.9
    with pytest.raises(ConfigError):
        DistillLoss(8, 4, projection=False)
    projected = DistillLoss(8, 4)  # student 8-d -> teacher 4-d: a learnt projection
    assert (projected.project.in_features, projected.project.out_features) == (8, 4)


def test_distill_loss_raw_keeps_the_teachers_geometry():
    """With ``raw``, the student regresses the raw unit vectors (mean included) and the cosine terms
    see both sides centred: a student equal to the teacher scores 0; one with the right centred
    directions but without the mean (what centred-only training allows) does not."""
    rng = np.random.default_rng(0)
    raw = (np.ones(16) * 3.0 + rng.normal(size=(1, 64, 16))).astype(np.float32)
    unit, mean, spread = unit_targets(raw)
    assert np.allclose(np.linalg.norm(unit, axis=2), 1.0, atol=1e-5) and 0.0 < spread < 0.5
    assert spread == pytest.approx(((unit[0] - mean) ** 2).sum(1).mean(), rel=1e-4)
    t = torch.from_numpy(unit[0])
    loss = DistillLoss(16, 16, cosine=1.0, relational=1.0, raw=1.0, mean=mean, spread=spread)
    value, parts = loss(t * 5.0, t)  # the student's length does not matter, its direction does
    assert value.item() == pytest.approx(0.0, abs=1e-4) and parts["distill_cos"].item() == pytest.approx(1.0, abs=1e-4)
    centred_only = torch.nn.functional.normalize(t - torch.from_numpy(mean), dim=1)
    _, parts = loss(centred_only, t)
    assert parts["distill_raw"].item() > 1.0
    with pytest.raises(ConfigError, match="teacher's space"):
        DistillLoss(8, 16, raw=1.0, mean=mean)


def test_select_faces_labels_and_duplicates(wide_set):
    keep, labels, classes = select_training_faces(wide_set, ["att", "flat"], min_images=3)
    labelled = int((wide_set.labels >= 0).sum())  # 60 photos, less any MTCNN rejected
    assert len(classes) == 6 and (labels >= 0).sum() == labelled >= 55
    assert len(keep) == len(wide_set) - 1  # the byte-identical copy is dropped
    keep_att, labels_att, _ = select_training_faces(wide_set, ["att"], min_images=20)
    assert (labels_att == -1).all() and len(keep_att) == labelled  # 10 photos < 20: distillation only
    with pytest.raises(DataNotFoundError, match="utkface"):
        select_training_faces(wide_set, ["att", "utkface"], 3)


@pytest.mark.slow  # a training run
def test_distillation_run_learns_from_teacher(wide_set, tmp_path):
    """A distillation-only run raises the student's agreement with the centred teacher targets."""
    out = tmp_path / "run"
    overrides = [f"data.packed={wide_set.root}", "data.sources=[att, flat]", "data.template=56x48", "data.workers=0",
                 "model.kwargs={widths: [8, 16, 16, 32], bn: true}", "model.embedding_dim=64",
                 f"distill.teacher={REPO / 'models' / 'default'}", "distill.views=2", "distill.workers=1",
                 "distill.margin=0.0", "distill.relational=1.0", "head.name=cosface", "head.kwargs={s: 30, m: 0.35}",
                 "head.lambda=null", "val.every=0", "train.steps=60", "train.batch_size=16", "train.log_every=10",
                 "train.threads=1", "train.amp=true", "train.channels_last=true", "optim.lr=0.05",
                 "schedule.milestones=[50]", "schedule.warmup_steps=0"]
    argv = ["--config", str(SMOKE), "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert train_main(argv) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    cos = [float(r.split(",")[header.index("distill_cos")]) for r in rows[1:]]
    assert cos[-1] > cos[0] + 0.1, cos
    assert (out / "model.pt").is_file() and (out / "training_curve.png").is_file()
    # a student is an embedder like any other
    student = load_embedder(out)
    crop = align_face(wide_set.wide(0), WIDE_160, "56x48")
    assert student.embed_crops(crop[None]).shape == (1, 64)
