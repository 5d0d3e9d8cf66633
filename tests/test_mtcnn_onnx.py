"""MTCNN on onnxruntime gives the torch path's answers: the resampling and NMS pieces against
torch's own, the shipped ONNX files against a fresh export, and end to end on LFW View 1 images
(detections within 0.5 px, cosine within 1e-3 for the same pair; bench/runtime_agreement.py runs
the same over all of View 1)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the reference runtime (the [train] extra)

from bench.runtime_agreement import MAX_COSINE, MAX_PX, agreement, view1_pairs  # noqa: E402
from faceverify.mtcnn_onnx import NET_FILES, _integral, area_resize, batched_nms  # noqa: E402
from faceverify.paths import MTCNN_DIR  # noqa: E402


@pytest.mark.parametrize("size", [(90, 90), (51, 37), (24, 24), (200, 170)])
def test_area_resize_is_torchs_area_interpolation(size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 150, 131, 3), dtype=np.uint8)
    ours = area_resize(_integral(image), (0, 0, 150, 131), size)
    ref = torch.nn.functional.interpolate(torch.from_numpy(image).permute(0, 3, 1, 2).float(), size=size, mode="area").numpy()
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-3


def test_batched_nms_is_torchvisions():
    from torchvision.ops import batched_nms as tv_batched_nms

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    groups = rng.integers(0, 3, 300)
    ours = batched_nms(boxes, scores, groups, 0.5)
    ref = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.5).numpy()
    assert sorted(ours.tolist()) == sorted(ref.tolist()) and len(ours) < 300


def test_shipped_networks_are_what_export_mtcnn_writes(tmp_path):
    import onnxruntime as ort

    from faceverify.export_mtcnn import export_mtcnn

    written = export_mtcnn(tmp_path)
    assert [p.name for p in written] == list(NET_FILES)
    x = np.random.default_rng(2).normal(size=(2, 3, 48, 48)).astype(np.float32)
    for name in NET_FILES:
        crop = x if name == "onet.onnx" else x[:, :, :24, :24] if name == "rnet.onnx" else x[:, :, :31, :45]
        shipped = ort.InferenceSession(str(MTCNN_DIR / name)).run(None, {"input": crop})
        fresh = ort.InferenceSession(str(tmp_path / name)).run(None, {"input": crop})
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(shipped, fresh)), name


def test_runtimes_agree_on_lfw_view1():
    """Part of pairsDevTest (both runtimes over the same 40 pairs): every face of every image
    within 0.5 px, every pair's cosine within 1e-3."""
    result = agreement(view1_pairs(("pairsDevTest.txt",), n=40))
    assert result["images"] >= 70 and result["pairs_compared"] >= 36, result
    assert result["images_with_different_face_counts"] == 0 and result["pairs_refused_differently"] == 0, result
    assert result["max_detection_diff_px"] <= MAX_PX, result
    assert result["max_cosine_diff"] <= MAX_COSINE, result


def test_a_photos_faces_do_not_depend_on_the_other_photos_in_its_batch():
    """Gary_Doer_0001 has a face cut by the left edge (box x1 < 0). facenet-pytorch's batched NMS
    shifts each image's boxes apart assuming x, y >= 0, so in one batch with Gary_Doer_0002 its
    second face came out 4.5 px off; both runtimes now give every photo its own answer."""
    from faceverify.detect import FaceDetector
    from faceverify.image import load_image
    from faceverify.paths import lfw_root

    images = [load_image(lfw_root() / "images" / "Gary_Doer" / f"Gary_Doer_000{k}.jpg") for k in (1, 2)]
    answers = {}
    for runtime in ("onnx", "torch"):
        detector = FaceDetector(runtime=runtime)
        batched = detector.detect_batch(images, min_score=0.0)
        alone = [detector.detect(image, min_score=0.0) for image in images]
        assert any(f.box[0] < 0 for f in alone[0])  # the case the shifting trick gets wrong
        for b, a in zip(batched, alone):
            assert len(b) == len(a) and all(np.array_equal(fb.box, fa.box) for fb, fa in zip(b, a)), runtime
        answers[runtime] = batched
    for o, t in zip(answers["onnx"], answers["torch"]):
        assert len(o) == len(t) and all(np.abs(fo.box - ft.box).max() <= MAX_PX for fo, ft in zip(o, t))


def test_the_pyramid_skips_only_levels_below_the_smallest_face():
    from faceverify.detect import FaceDetector

    full = FaceDetector(min_face_fraction=0, min_face_px=0)
    lean = FaceDetector()
    assert full.scales(150, 150)[0] == pytest.approx(0.6)  # 12 / min_face_size 20
    # faces of 20 px (< 150 / 6) and of 28 px (< min_face_px 36) not looked for
    assert lean.scales(150, 150) == full.scales(150, 150)[2:]
    assert FaceDetector(min_face_px=0).scales(150, 150) == full.scales(150, 150)[1:]
    assert lean.scales(480, 640) == FaceDetector(min_face_px=0).scales(480, 640)  # the fraction's floor (80 px) rules
    assert len(lean.scales(1280, 960)) < len(full.scales(1280, 960))
    assert lean.scales(30, 30) == full.scales(30, 30)[-1:]  # an image under the floor keeps its coarsest level
    assert full.scales(14, 14) == []  # nothing of 20 px fits
