"""Evaluation protocol math on tiny synthetic embeddings whose right answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.errors import ConfigError
from faceverify.evaluation import lfw, megaface, metrics
from faceverify.evaluation.features import FeatureSet
from faceverify.pca import Pca


def unit(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)])


# --------------------------------------------------------------------------- pairs / folds
def test_pairs_file_folds_are_contiguous_blocks(tmp_path):
    f = tmp_path / "pairs.txt"
    same = ["A\t1\t2", "B\t1\t3"]
    diff = ["A\t1\tB\t2", "C\t4\tD\t12"]
    f.write_text("3\t2\n" + "\n".join((same + diff) * 3) + "\n")
    pairs = lfw.read_pairs(f)
    assert (pairs.n_folds, pairs.fold_size, len(pairs)) == (3, 4, 12)
    assert pairs.folds.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert pairs.same.tolist() == [True, True, False, False] * 3
    assert pairs.left[0] == "A/A_0001.jpg" and pairs.right[0] == "A/A_0002.jpg"
    assert pairs.left[3] == "C/C_0004.jpg" and pairs.right[3] == "D/D_0012.jpg"
    assert sorted(pairs.images()) == ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg", "B/B_0002.jpg",
                                      "B/B_0003.jpg", "C/C_0004.jpg", "D/D_0012.jpg"]


def test_pairs_file_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\n")  # promises 4 pairs, has 2
    with pytest.raises(ConfigError, match="promises 2 folds"):
        lfw.read_pairs(f)
    f.write_text("1\t2\nA\t1\t2\nA\t1\tB\t1\nA\t1\tC\t1\nA\t1\tD\t1\n")  # 1 same instead of 2
    with pytest.raises(ConfigError, match="fold 1 has 1 same-person"):
        lfw.read_pairs(f)
    f.write_text("pairs file\n")
    with pytest.raises(ConfigError, match="not an LFW pairs header"):
        lfw.read_pairs(f)


def test_real_view2_pair_i_is_in_fold_ceil_i_over_600():
    from faceverify.paths import lfw_root

    pairs = lfw.read_pairs(lfw_root() / "pairs.txt")
    assert (len(pairs), pairs.n_folds, pairs.fold_size) == (6000, 10, 600)
    i = np.arange(1, 6001)
    assert (pairs.folds + 1 == np.ceil(i / 600)).all()
    assert pairs.same[:300].all() and not pairs.same[300:600].any()
    dev = lfw.read_pairs(lfw_root() / "pairsDevTest.txt")  # View 1: one-field header "500"
    assert (len(dev), dev.n_folds) == (1000, 1)


# --------------------------------------------------------------------------- thresholds
def test_threshold_is_the_mean_of_all_best_thresholds():
    # every t in (0.2, 0.5) separates perfectly: sweep points 0.2001 ... 0.4999, mean 0.35
    scores = np.array([0.5, 0.6, 0.1, 0.2])
    same = np.array([True, True, False, False])
    assert metrics.best_threshold(scores, same) == pytest.approx(0.35, abs=1e-12)


def test_best_thresholds_on_two_disjoint_intervals_are_all_averaged():
    # genuine 0.3, 0.8; impostor 0.5, -0.2. Best accuracy 3/4 on t in (-0.2, 0.3) (4,999 sweep
    # points, mean 0.05) and on t in (0.5, 0.8) (2,999 points, mean 0.65).
    scores = np.array([0.3, 0.8, 0.5, -0.2])
    same = np.array([True, True, False, False])
    expected = (4999 * 0.05 + 2999 * 0.65) / (4999 + 2999)
    assert metrics.best_threshold(scores, same) == pytest.approx(expected, abs=1e-9)


def test_accuracy_is_strict_on_both_sides():
    # SphereFace getAccuracy: genuine correct if > t, impostor correct if < t; equality is wrong
    scores = np.array([0.5, 0.5])
    same = np.array([True, False])
    assert metrics.accuracy(scores, same, 0.5) == 0.0
    assert metrics.accuracy(scores, same, 0.4) == 0.5


# --------------------------------------------------------------------------- 10-fold
def test_centring_uses_only_the_other_folds():
    # fold 0 (test): vectors near (10, 0); fold 1 (train) is symmetric about the origin (mean 0).
    # Testing fold 0 therefore subtracts mu = 0, and its scores are the plain cosines, e.g.
    # (10, 1) vs (10, -1): 99 / 101. Including fold 0 in the mean would move them.
    a, b = unit(30) * 2, unit(120) * 2
    left = np.array([[10, 1], [10, 2], [10, 1], [10, -3],   # fold 0
                     a, -a, b, -b])                         # fold 1
    right = np.array([[10, -1], [10, 2.5], [10, 0], [10, 3],
                      a * 1.1, -a * 1.1, -b, b])
    same = np.array([True, True, False, False] * 2)
    folds = np.repeat([0, 1], 4)
    res = lfw.ten_fold(left, right, same, folds)
    assert res.scores[0] == pytest.approx(99 / 101)
    assert res.scores[3] == pytest.approx((100 - 9) / 109)
    # fold 1's threshold comes from fold 0, whose scores are all ~1: its diff pairs score > 0.9
    # (both correctly "different"? no: they are accepted) -> fold 0 accuracy is 50%
    assert res.folds[0].accuracy == 0.5


def test_pca_is_fitted_without_the_test_fold():
    # Training fold (1) varies only in dims 0-1; the test fold's different pairs differ only in
    # dim 2. A 2-d PCA fitted on fold 1 alone drops dim 2, so test-fold different pairs become
    # identical (cosine 1, accepted: wrong) -> 50%. Without PCA (or a PCA that saw the test fold)
    # they are told apart -> 100%.
    test_left = np.array([[1, 0, 5], [2, 1, -5], [1, 0, 5], [2, 1, 5]], float)
    test_right = np.array([[1, 0, 5], [2, 1, -5], [1, 0, -5], [2, 1, -5]], float)
    rng = np.random.default_rng(0)
    train_left = np.c_[rng.normal(size=(4, 2)) * 3, np.zeros(4)]
    train_right = train_left.copy()
    train_right[2:] = -train_right[2:]  # different pairs point the other way
    train_right[:2, :2] += 0.01
    left, right = np.r_[test_left, train_left], np.r_[test_right, train_right]
    same = np.array([True, True, False, False] * 2)
    folds = np.repeat([0, 1], 4)
    with_pca = lfw.ten_fold(left, right, same, folds, pca=2)
    assert with_pca.folds[0].pca_dim == 2
    assert with_pca.folds[0].accuracy == 0.5
    assert with_pca.scores[2] == pytest.approx(1.0) and with_pca.scores[3] == pytest.approx(1.0)
    no_pca = lfw.ten_fold(left, right, same, folds)
    assert no_pca.folds[0].accuracy == 1.0
    # a PCA that had seen the test fold would keep dim 2 among its top-2 components
    leaky = Pca.fit(np.r_[left, right], 2)
    assert np.abs(leaky.components[:, 2]).max() > 0.9


def test_pca_kept_variance_fraction():
    x = np.array([[10, 0, 0], [-10, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0, 0.1], [0, 0, -0.1]])
    # variances along the axes: 200 : 18 : 0.02 -> first component explains 200 / 218.02 = 0.917
    assert Pca.fit(x, 0.9).components.shape[0] == 1
    assert Pca.fit(x, 0.95).components.shape[0] == 2
    assert Pca.fit(x, 0.99999).components.shape[0] == 3
    assert Pca.fit(x, 2).explained_variance == pytest.approx(218 / 218.02)
    with pytest.raises(ConfigError):
        Pca.fit(x, 7)


def test_flip_modes_from_the_feature_set():
    fs = FeatureSet(["a", "b"], np.array([[1, 0], [0, 1]], np.float32), np.array([[0, 2], [3, 0]], np.float32),
                    np.array(["mtcnn", "center_crop"]))
    assert fs.vectors(["b"], "none").tolist() == [[0, 1]]
    assert fs.vectors(["b", "a"], "sum").tolist() == [[3, 1], [1, 2]]
    assert fs.vectors(["a"], "concat").tolist() == [[1, 0, 0, 2]]
    assert fs.source_counts() == {"center_crop": 1, "mtcnn": 1}


# --------------------------------------------------------------------------- ROC metrics
def test_roc_auc_eer_and_optimistic_accuracy_by_hand():
    scores = np.array([0.9, 0.8, 0.4, 0.5, 0.3, 0.1])
    same = np.array([True, True, True, False, False, False])
    curve = metrics.roc(scores, same)
    assert metrics.auc(curve) == pytest.approx(8 / 9)  # P(genuine > impostor): 3 + 3 + 2 of 9
    rate, _ = metrics.eer(curve)
    assert rate == pytest.approx(1 / 3)
    acc, thr = metrics.optimistic_accuracy(scores, same)
    assert acc == pytest.approx(5 / 6) and 0.3 < thr < 0.4
    tar = metrics.tar_at_far_pairs(scores, same, [0.34, 0.1])
    assert tar["0.34"].tar == 1.0 and tar["0.34"].threshold == pytest.approx(0.3)  # one impostor (0.5) allowed
    assert tar["0.1"].tar == pytest.approx(2 / 3) and tar["0.1"].threshold == 0.5 and not tar["0.1"].resolvable


# --------------------------------------------------------------------------- MegaFace
def _constructed_megaface():
    # Identity A at 0 and 10 degrees, identity B at 90 and 60 degrees; distractors at -6, 101, 115,
    # 200, 250, 300 degrees. Scores are cosines of angle differences.
    probes = np.array([unit(0), unit(10), unit(90), unit(60)])
    ids = np.array(["A", "A", "B", "B"])
    distractors = np.array([unit(a) for a in (-6, 101, 115, 200, 250, 300)])
    return probes, ids, distractors


def test_cmc_on_a_constructed_case():
    probes, ids, distractors = _constructed_megaface()
    res = megaface.evaluate(probes, ids, distractors, sizes=[6], max_rank=4, fars=[0.05])
    # A0 -> A10 (cos 10): beaten by -6 (cos 6): rank 2.  A10 -> A0: -6 is at 16: rank 1.
    # B90 -> B60 (cos 30): beaten by 101 (cos 11) and 115 (cos 25): rank 3.  B60 -> B90: rank 1.
    assert res.sizes[0].cmc.tolist() == [0.5, 0.75, 1.0, 1.0]
    assert res.n_searches == 4 and res.n_identities == 2
    assert res.to_dict()["rank1"] == {"6": 0.5}


def test_tar_at_far_on_a_constructed_case():
    probes, ids, distractors = _constructed_megaface()
    # 4 x 6 = 24 impostor scores; the highest: cos 6 (A0,-6), cos 11 (B90,101), cos 16 (A10,-6),
    # cos 25 (B90,115), cos 41 (B60,101). Genuine: cos 10 (x2), cos 30 (x2).
    res = megaface.evaluate(probes, ids, distractors, sizes=[6], fars=[0.05, 0.17, 0.001])
    tar = res.sizes[0].tar
    # FAR 0.05: floor(1.2) = 1 impostor may pass -> threshold cos 11 -> only the cos 10 pairs pass
    assert tar["0.05"].threshold == pytest.approx(np.cos(np.deg2rad(11)))
    assert tar["0.05"].tar == 0.5
    # FAR 0.17: floor(4.08) = 4 may pass -> threshold cos 41 -> every genuine pair passes
    assert tar["0.17"].tar == 1.0 and tar["0.17"].achieved_far == pytest.approx(4 / 24)
    # FAR 0.001 < 1/24: no impostor may pass -> threshold = the highest impostor (cos 6) -> none
    assert tar["0.001"].tar == 0.0 and not tar["0.001"].resolvable


def test_faiss_top_impostors_match_brute_force():
    # the adaptive per-probe top-k must give exactly the dense matrix's global top-K
    rng = np.random.default_rng(3)
    probes = megaface.normalise_rows(rng.normal(size=(40, 8)))
    ids = np.repeat(np.arange(20), 2)
    distractors = megaface.normalise_rows(rng.normal(size=(3000, 8)))
    fars = (0.05, 1e-3, 1e-5)
    res = megaface.evaluate(probes, ids, distractors, sizes=[3000], fars=fars)
    dense = (probes @ distractors.T).ravel()
    genuine = res.genuine_scores
    for far in fars:
        k = int(np.floor(far * dense.size + 1e-9))
        thr = np.sort(dense)[::-1][k]
        got = res.sizes[0].tar[repr(far)]
        assert got.threshold == pytest.approx(thr, abs=1e-6)
        assert got.tar == pytest.approx((genuine > thr).mean())
    # rank-1 = gallery beats every distractor
    top1 = (probes @ distractors.T).max(1)
    pairs = megaface.genuine_pairs(probes, ids)
    assert res.sizes[0].rank1 == pytest.approx((pairs.scores > top1[pairs.probe]).mean())


def test_distractor_sizes_and_nested_sampling():
    assert megaface.distractor_sizes(4069) == [10, 100, 1000, 4069]
    assert megaface.distractor_sizes(1000) == [10, 100, 1000]
    assert megaface.distractor_sizes(7) == [7]
    with pytest.raises(ConfigError):
        megaface.distractor_sizes(50, [100])
    # more distractors can only lower (never raise) each search's chance: nested sets
    probes, ids, _ = _constructed_megaface()
    rng = np.random.default_rng(0)
    distractors = rng.normal(size=(500, 2))
    res = megaface.evaluate(probes, ids, distractors, seed=1)
    r1 = [s.rank1 for s in res.sizes]
    assert [s.distractors for s in res.sizes] == [10, 100, 500]
    assert r1 == sorted(r1, reverse=True)


def test_synthetic_unit_vectors_are_unit_and_seeded():
    a = megaface.synthetic_unit_vectors(1000, 16, seed=5, chunk=300)
    assert a.shape == (1000, 16) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.array_equal(a, megaface.synthetic_unit_vectors(1000, 16, seed=5, chunk=300))


def test_euclidean_metric_ignores_centring_and_norms():
    # pair scores are -|l - r| of raw features: centring cannot change them, and unlike cosine they
    # see a change of length: (1, 0) vs (3, 0) are far apart although their cosine is 1
    left = np.array([[1, 0], [0, 1], [1, 0], [0, 2]] * 2, float)
    right = np.array([[1.1, 0], [0, 1.2], [3, 0], [0, 4.5]] * 2, float)
    same = np.array([True, True, False, False] * 2)
    folds = np.repeat([0, 1], 4)
    a = lfw.ten_fold(left, right, same, folds, metric="euclidean")
    b = lfw.ten_fold(left, right, same, folds, metric="euclidean", center=False)
    assert np.allclose(a.scores, b.scores)
    assert np.allclose(a.scores[:4], [-0.1, -0.2, -2.0, -2.5])
    assert a.mean == 1.0  # threshold between -0.2 and -2.0
    assert lfw.ten_fold(left, right, same, folds, center=False).mean == 0.5  # plain cosine: every pair scores 1


def test_all_pairs_far_thresholds_match_brute_force():
    """Calibration thresholds over every image pair (chunked, top impostors only) equal the
    brute-force quantiles of the full impostor score list."""
    from faceverify.evaluation.lfw import all_pairs_tar_at_far

    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(300), 5)
    x = rng.normal(size=(300, 64))[ids] + 0.8 * rng.normal(size=(1500, 64))
    result = all_pairs_tar_at_far(x, ids, fars=(1e-3, 1e-4), chunk=256)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    iu = np.triu_indices(1500, 1)
    scores, same = (xn @ xn.T)[iu], ids[iu[0]] == ids[iu[1]]
    impostor = np.sort(scores[~same])[::-1]
    assert (result["genuine_pairs"], result["impostor_pairs"]) == (same.sum(), (~same).sum())
    for far in (1e-3, 1e-4):
        threshold = impostor[int(np.floor(far * impostor.size))]
        at = result["tar_at_far"][repr(far)]
        assert at.threshold == pytest.approx(threshold, abs=1e-6)
        assert at.tar == pytest.approx((scores[same] > threshold).mean(), abs=1e-3)
