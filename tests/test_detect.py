"""MTCNN detection on real images: float arrays out, thresholds, batches, face selection."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.detect import Face, select_face
from faceverify.errors import MultipleFacesError, NoFaceError
from faceverify.image import load_image


def test_detect_returns_float_arrays(detector, lfw_images):
    faces = detector.detect(load_image(lfw_images / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))
    assert len(faces) >= 1
    face = faces[0]
    assert face.box.dtype == np.float32 and face.box.shape == (4,)
    assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
    assert face.score >= 0.95
    x1, y1, x2, y2 = face.box
    inside = (face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2) & (face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)
    assert inside.all()
    left_eye, right_eye = face.landmarks[0], face.landmarks[1]
    assert left_eye[0] < right_eye[0]  # "left" = image left


def test_no_face_in_a_blank_image(detector):
    assert detector.detect(np.full((120, 120, 3), 90, np.uint8)) == []


def test_min_score_filters(detector, lfw_images):
    image = load_image(lfw_images / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    assert len(detector.detect(image, min_score=0.0)) >= len(detector.detect(image)) >= 1
    assert detector.detect(image, min_score=1.01) == []


def test_batch_equals_single(detector, lfw_images):
    paths = sorted((lfw_images / "Colin_Powell").iterdir())[:4]
    images = [load_image(p) for p in paths] + [np.zeros((80, 60, 3), np.uint8)]  # mixed sizes
    batched = detector.detect_batch(images)
    for image, faces in zip(images, batched):
        single = detector.detect(image)
        assert len(single) == len(faces)
        for a, b in zip(single, faces):
            assert np.allclose(a.box, b.box, atol=1e-2) and np.allclose(a.landmarks, b.landmarks, atol=1e-2)


def two_faces(lfw_images) -> np.ndarray:
    left = load_image(lfw_images / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    right = load_image(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg")
    return np.concatenate([left, right], axis=1)


def test_two_faces_found_and_policies(detector, lfw_images):
    image = two_faces(lfw_images)
    faces = detector.detect(image)
    assert len(faces) >= 2
    with pytest.raises(MultipleFacesError):
        select_face(faces, image.shape, "reject")
    largest = select_face(faces, image.shape, "largest")
    assert largest.area == max(f.area for f in faces)


def test_selection_rules_on_constructed_faces():
    lm = np.zeros((5, 2), np.float32)
    big_edge = Face(np.array([0, 0, 60, 60], np.float32), 0.99, lm)
    small_centre = Face(np.array([85, 85, 115, 115], np.float32), 0.999, lm)
    shape = (200, 200, 3)
    assert select_face([big_edge, small_centre], shape, "largest") is big_edge
    assert select_face([big_edge, small_centre], shape, "central") is small_centre
    assert select_face([big_edge, small_centre], shape, "highest_score") is small_centre
    # largest_central: 3600 * (1 - 99/141) = 1073 > 900 * 1
    assert select_face([big_edge, small_centre], shape, "largest_central") is big_edge
    with pytest.raises(NoFaceError):
        select_face([], shape)


def test_detection_cache_serves_a_second_run_without_mtcnn(detector, lfw_images, tmp_path):
    from faceverify.detect import CachedDetector

    images = [load_image(lfw_images / "Colin_Powell" / f"Colin_Powell_000{k}.jpg") for k in (1, 2)]
    cached = CachedDetector(tmp_path, detector)
    first = cached.detect_batch(images)
    direct = detector.detect_batch(images)
    assert [len(f) for f in first] == [len(f) for f in direct] and len(first[0]) >= 1
    assert np.allclose(first[0][0].landmarks, direct[0][0].landmarks)
    cached.save()

    class MustNotRun:
        min_score, min_face_size, stage_thresholds, scale_factor = (detector.min_score, detector.min_face_size,
                                                                    detector.stage_thresholds, detector.scale_factor)
        min_face_fraction, min_face_px = detector.min_face_fraction, detector.min_face_px

        def detect_batch(self, images, min_score=None):
            raise AssertionError("the cache should have served these images")

    again = CachedDetector(tmp_path, MustNotRun())  # a new process would load the file like this
    second = again.detect_batch(images)
    assert [len(f) for f in second] == [len(f) for f in first]
    assert np.array_equal(second[0][0].landmarks, first[0][0].landmarks) and second[0][0].score == first[0][0].score
    # the per-call threshold filters cached faces as the detector would
    assert again.detect_batch(images, min_score=1.01) == [[], []]
    # other pixels are a miss (here: the detector must run)
    with pytest.raises(AssertionError, match="should have served"):
        again.detect(images[0][:, ::-1].copy())
