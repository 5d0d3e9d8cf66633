"""One detect -> select -> align path: prep, the evaluation embedder, training validation and the
Verifier (verify CLI and service) cut the same crop from the same photo, large photos included."""

from __future__ import annotations

import csv
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from faceverify.detect import select_face
from faceverify.loaders import load_embedder
from faceverify.errors import NoFaceError
from faceverify.image import load_image
from faceverify.packed import PackedFaces, read_shard_meta
from faceverify.paths import DEFAULT_MODEL_DIR
from faceverify.face_aligner import DETECT_MAX_SIDE, FaceAligner
from faceverify.prep import prepare_dataset
from faceverify.transforms import crops_to_tensor
from faceverify.verify import Verifier

PHOTO = "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
LARGE_SIDE = 1800  # > DETECT_MAX_SIDE: every path must detect on the same 1280 px copy


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_images):
    """One identity folder: an LFW photo as it is (150x150) and the same photo enlarged to 1800x1800."""
    root = tmp_path_factory.mktemp("photos")
    person = root / "src" / "Aaron_Eckhart"
    person.mkdir(parents=True)
    shutil.copy(lfw_images / PHOTO, person / "a_small.jpg")
    large = cv2.resize(load_image(lfw_images / PHOTO), (LARGE_SIDE, LARGE_SIDE), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(person / "b_large.png"), large[:, :, ::-1])
    return root, [person / "a_small.jpg", person / "b_large.png"]


@pytest.fixture(scope="module")
def verifier():
    return Verifier.from_model()  # the shipped default model, as `faceverify verify` and `serve` load it


def test_prep_eval_and_verifier_cut_byte_identical_crops(photos, verifier, detector):
    root, paths = photos
    images = [load_image(p) for p in paths]
    template = verifier.aligner.template

    # prep (pad 0, so its crops are the model's input size)
    dst = root / "packed"
    summary = prepare_dataset(root / "src", dst, template=template, pad=0, progress=False)
    assert summary["images_kept"] == 2 and summary["alignment_sources"]["mtcnn"] == 2
    packed = PackedFaces(dst)
    prep_crops = [packed[i][0] for i in range(len(packed))]
    prep_landmarks = np.asarray(read_shard_meta(dst, 0)["landmarks"])
    assert [p.split("/")[-1] for p in packed.paths] == ["a_small.jpg", "b_large.png"]

    # evaluation: the embedder path (`faceverify eval` builds it with the center_crop fallback)
    embedder = load_embedder(DEFAULT_MODEL_DIR, fallback="center_crop")
    eval_faces = embedder.embed(images).faces

    # verify CLI and service: Verifier.embed_faces
    results = verifier.embed_faces(images)

    for i in range(2):
        assert eval_faces[i].source == results[i].aligned.source == "mtcnn"
        assert prep_crops[i].shape == eval_faces[i].crop.shape == results[i].aligned.crop.shape
        assert np.array_equal(prep_crops[i], eval_faces[i].crop), f"prep and eval differ on {paths[i].name}"
        assert np.array_equal(prep_crops[i], results[i].aligned.crop), f"prep and verify differ on {paths[i].name}"
        assert np.array_equal(eval_faces[i].landmarks, results[i].aligned.landmarks)
        assert np.allclose(prep_landmarks[i], results[i].aligned.landmarks, atol=0.006)  # prep records 0.01 px

    # the large photo was detected on a copy shrunk to DETECT_MAX_SIDE, on every path alike
    large = images[1]
    s = DETECT_MAX_SIDE / LARGE_SIDE
    shrunk = cv2.resize(large, (DETECT_MAX_SIDE, DETECT_MAX_SIDE), interpolation=cv2.INTER_AREA)
    face = select_face(detector.detect(shrunk), shrunk.shape)
    expected = face.landmarks / np.float32(s)
    assert np.array_equal(results[1].aligned.landmarks, expected)
    assert np.array_equal(eval_faces[1].landmarks, expected)
    assert np.allclose(prep_landmarks[1], expected, atol=0.006)
    full_resolution = select_face(detector.detect(large), large.shape).landmarks
    assert not np.allclose(full_resolution, expected, atol=0.01)  # not shrinking would have given other points


def test_training_validation_aligns_with_mtcnn_like_evaluation(tmp_path, lfw_images):
    from faceverify.training.validate import DETECT_BATCH, LfwView1Validator

    aligner = load_embedder(DEFAULT_MODEL_DIR, fallback="center_crop").aligner  # evaluation's
    val = LfwView1Validator(aligner.template, n_pairs=4, cache_dir=tmp_path)
    assert list((tmp_path / "features" / "detections").glob("detections-*.npz")), "detections are cached"
    # the same images through evaluation's aligner, in one MTCNN batch as the validator detects
    # them (a batched pyramid moves points by ~1e-3 px against single images)
    assert len(val.names) <= DETECT_BATCH
    crops = np.stack([face.crop for face in aligner.align_batch([load_image(lfw_images / n) for n in val.names])])
    assert torch.equal(val.inputs, crops_to_tensor(crops))
    again = LfwView1Validator(aligner.template, n_pairs=4, cache_dir=tmp_path)  # from the cache: the same crops
    assert torch.equal(again.inputs, val.inputs)


def test_faces_below_min_score_are_reported(photos, detector, tmp_path):
    _, paths = photos
    image = load_image(paths[0])
    with pytest.raises(NoFaceError) as caught:
        FaceAligner(detector, min_score=1.01).align(image)
    assert caught.value.details["best_score"] > 0.9
    with pytest.raises(NoFaceError) as caught:
        FaceAligner(detector).align(np.full((150, 150, 3), 127, np.uint8))
    assert "best_score" not in caught.value.details
    src = tmp_path / "src" / "person"
    src.mkdir(parents=True)
    shutil.copy(paths[0], src / "a.jpg")
    summary = prepare_dataset(tmp_path / "src", tmp_path / "packed", min_score=1.01, progress=False)
    assert summary["images_kept"] == 0 and summary["failures_by_reason"] == {"low_score": 1}
    with (tmp_path / "packed" / "failures.csv").open() as fh:
        row = list(csv.DictReader(fh))[0]
    found = re.fullmatch(r"low_score \((\d\.\d{3}) < 1\.01\)", row["detail"])
    assert found and float(found.group(1)) > 0.9, row
