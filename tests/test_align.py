"""Alignment: templates, the similarity transform, and crops of real LFW faces."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.align import ARCFACE_112x112, SPHEREFACE_112x96, TEMPLATES, align_face, similarity_transform, template_points
from faceverify.image import load_image
from faceverify.landmarks import LFW_250_TO_150, check_landmark_scale, read_landmark_file
from faceverify.face_aligner import FaceAligner

FRONTAL = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0010.jpg", "Colin_Powell/Colin_Powell_0001.jpg"]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_arcface_template_is_sphereface_plus_8_in_x():
    assert np.array_equal(ARCFACE_112x112, SPHEREFACE_112x96 + np.float32([8.0, 0.0]))
    insightface_arcface_dst = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    assert np.allclose(ARCFACE_112x112, insightface_arcface_dst, atol=1e-5)
    assert TEMPLATES["112x96"][1] == (112, 96) and TEMPLATES["112x112"][1] == (112, 112)


def test_padding_shifts_template_and_grows_crop():
    points, size = template_points("112x96", pad=2)
    assert size == (116, 100) and np.allclose(points, SPHEREFACE_112x96 + 2)


def test_similarity_transform_recovers_a_known_similarity():
    angle, scale, shift = np.deg2rad(17.0), 1.7, np.array([12.5, -3.25])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (SPHEREFACE_112x96 - shift) @ np.linalg.inv(rot).T  # so that rot @ src + shift == template
    matrix = similarity_transform(src, SPHEREFACE_112x96)
    assert np.allclose(matrix[:, :2], rot, atol=1e-4) and np.allclose(matrix[:, 2], shift, atol=1e-3)
    assert np.abs(apply(matrix, src) - SPHEREFACE_112x96).max() < 1e-3


def test_similarity_transform_never_reflects():
    mirrored = SPHEREFACE_112x96 * np.array([-1.0, 1.0], dtype=np.float32)
    matrix = similarity_transform(mirrored, SPHEREFACE_112x96)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.fixture(scope="module")
def aligner(detector):
    return FaceAligner(detector)


@pytest.mark.parametrize("name", FRONTAL)
def test_aligned_eye_centres_land_on_the_template(aligner, detector, lfw_images, name):
    image = load_image(lfw_images / name)
    aligned = aligner.align(image)
    assert aligned.source == "mtcnn" and aligned.crop.shape == (112, 96, 3)
    matrix = similarity_transform(aligned.landmarks, SPHEREFACE_112x96)
    eyes = apply(matrix, aligned.landmarks)[:2]
    assert np.linalg.norm(eyes - SPHEREFACE_112x96[:2], axis=1).max() < 2.0
    # Independent check: MTCNN run again on the aligned crop (with a 24 px margin, so the
    # detector sees some context) finds the eyes on the template.
    import cv2

    padded = align_face(image, aligned.landmarks, "112x96", pad=24)
    again = detector.detect(cv2.resize(padded, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    assert again, "the aligned crop must still contain a detectable face"
    # (3 px: MTCNN re-detection adds its own ~1 px landmark noise to the 2 px alignment bound)
    assert np.linalg.norm(again[0].landmarks[:2] / 2 - 24 - SPHEREFACE_112x96[:2], axis=1).max() < 3.0


def test_112x112_crop_is_the_112x96_crop_with_8px_more_each_side(aligner, lfw_images):
    image = load_image(lfw_images / FRONTAL[0])
    narrow = aligner.align(image).crop
    wide = FaceAligner(aligner.detector, template="112x112").align(image).crop
    assert wide.shape == (112, 112, 3)
    assert np.abs(wide[:, 8:104].astype(int) - narrow).max() <= 1


def test_shifting_the_input_gives_the_same_crop(aligner, lfw_images):
    image = load_image(lfw_images / FRONTAL[1])
    base = aligner.align(image)
    shifted_image = np.zeros((190, 180, 3), np.uint8)
    shifted_image[23:173, 17:167] = image
    # exact with the same landmarks shifted: the transform absorbs the translation
    exact = aligner.align(shifted_image, base.landmarks + np.array([17, 23], np.float32))
    assert np.abs(exact.crop.astype(int) - base.crop).max() <= 1
    # and through MTCNN, which must find the same face again
    detected = aligner.align(shifted_image)
    assert np.allclose(detected.landmarks - [17, 23], base.landmarks, atol=2.0)
    assert np.corrcoef(detected.crop.ravel(), base.crop.ravel())[0, 1] > 0.9


def test_flipping_the_input_gives_the_mirrored_crop(aligner, lfw_images):
    image = load_image(lfw_images / FRONTAL[0])
    base = aligner.align(image).crop
    flipped = aligner.align(np.ascontiguousarray(image[:, ::-1])).crop
    other = aligner.align(load_image(lfw_images / FRONTAL[2])).crop
    same = np.corrcoef(flipped[:, ::-1].ravel(), base.ravel())[0, 1]
    assert same > 0.85 and same > np.corrcoef(other.ravel(), base.ravel())[0, 1]


def test_landmark_file_alignment_matches_mtcnn(aligner, data_dir, lfw_images):
    table = read_landmark_file(data_dir / "lfw" / "lfw_landmark.txt", LFW_250_TO_150)
    assert len(table) == 13233
    image = load_image(lfw_images / FRONTAL[0])
    from_file = aligner.align(image, table[FRONTAL[0]])
    assert from_file.source == "landmarks"
    mtcnn = aligner.align(image)
    inter_ocular = np.linalg.norm(table[FRONTAL[0]][0] - table[FRONTAL[0]][1])
    assert np.linalg.norm(mtcnn.landmarks - table[FRONTAL[0]], axis=1).mean() / inter_ocular < 0.1


def test_wrong_landmark_scale_is_caught(detector, data_dir, lfw_images):
    from faceverify.errors import ConfigError

    table = read_landmark_file(data_dir / "lfw" / "lfw_landmark.txt", scale=1.0)
    with pytest.raises(ConfigError, match=r"about 0\.[56]"):
        check_landmark_scale(table, lfw_images, detector, 1.0)
    check_landmark_scale(read_landmark_file(data_dir / "lfw" / "lfw_landmark.txt", LFW_250_TO_150), lfw_images, detector, LFW_250_TO_150)


def test_center_crop_fallback_only_when_asked(aligner):
    blank = np.full((150, 150, 3), 127, np.uint8)
    from faceverify.errors import NoFaceError

    with pytest.raises(NoFaceError):
        aligner.align(blank)
    fallback = FaceAligner(aligner.detector, fallback="center_crop").align(blank)
    assert fallback.source == "center_crop" and fallback.crop.shape == (112, 96, 3)


def test_align_face_rejects_nan_landmarks():
    with pytest.raises(ValueError):
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), np.nan))


def _dots(points: np.ndarray, shape=(150, 150)) -> np.ndarray:
    """A black image with a small bright Gaussian blob at each (x, y) point."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    img = np.zeros(shape, np.float32)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
    return np.repeat((255 * img / img.max()).astype(np.uint8)[..., None], 3, axis=2)


def _blob_centre(crop: np.ndarray, point: np.ndarray, radius: int = 3) -> np.ndarray:
    x0, y0 = int(round(point[0])), int(round(point[1]))
    patch = crop[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(patch * xx).sum(), (patch * yy).sum()]) / patch.sum()


@pytest.mark.parametrize("template,pad", [("56x48", 0), ("56x48", 1), ("112x96", 2)])
def test_landmarks_land_on_the_template_points(template, pad):
    """Pixel-centre convention of every template, the downscaled one included: blobs drawn at the
    landmarks are found, after alignment, at the template points (within 0.1 px)."""
    angle = np.deg2rad(7.0)  # landmarks = an exact similarity of the template, so all 5 points map exactly
    rotation = 1.1 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (SPHEREFACE_112x96 @ rotation.T + np.array([28.0, 5.0])).astype(np.float32)
    crop = align_face(_dots(landmarks), landmarks, template, pad)
    points, (height, width) = template_points(template, pad)
    assert crop.shape == (height, width, 3)
    radius = 3 if template == "56x48" else 5
    for p in points:
        assert np.abs(_blob_centre(crop, p, radius) - p).max() < 0.1


def test_56x48_is_the_area_averaged_112x96_crop(aligner, lfw_images):
    """Train crops are read from full-size packed crops (2x2 averaged); eval aligns at 56x48 directly."""
    img = load_image(lfw_images / "Colin_Powell" / "Colin_Powell_0001.jpg")
    face = aligner.align(img)
    full = align_face(img, face.landmarks, "112x96", 2).astype(np.float64)
    small = align_face(img, face.landmarks, "56x48", 1).astype(np.float64)
    averaged = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2]) / 4
    assert small.shape == (58, 50, 3)
    assert np.abs(small - averaged).max() <= 0.5 + 1e-9  # uint8 rounding only
