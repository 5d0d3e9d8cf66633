"""Evaluation runs: a model (``ModelRef``) and ``EvalOptions`` in, the report (a dict) out, with its
JSON/Markdown/PNG files written under ``out``: LFW View 2 (``lfw``), LFW View 1 with the service's
calibration (``view1``) and MegaFace-style identification (``megaface``). ``faceverify eval``
(``faceverify.commands.eval``) parses and prints around these; scripts call them directly.

What differs between models (dlib's own detector, a card's input normalisation, a descriptor's
native metric) comes from the embedder and the model card, never from the model's name here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .. import calibration
from ..detect import DEFAULT_POLICY, detector_config
from ..errors import ConfigError, DataNotFoundError
from ..loaders import load_embedder
from ..models import ModelRef, file_digest
from ..paths import display_path, lfw_root
from . import lfw as protocol_lfw
from . import megaface as protocol_megaface
from . import metrics, report
from .features import FeatureSet, cache_key, compute_features, default_cache_dir, feature_config, use_detection_cache


@dataclass
class EvalOptions:
    """How a model is evaluated. ``flip``, ``pca``, ``center`` and ``metric`` left None take the
    model's recorded values (its card's ``evaluation``), then the defaults: no flip, no PCA,
    centred, cosine."""

    flip: str | None = None  # "none" | "sum" | "concat": flip test-time augmentation
    pca: float | None = None  # N >= 1 keeps N dims, 0 < N < 1 that variance fraction
    center: bool | None = None  # centre features on the training folds' mean (SphereFace does)
    metric: str | None = None  # "cosine" | "euclidean": the 10-fold pair score
    policy: str = DEFAULT_POLICY  # which face when the detector finds several
    batch_size: int = 64
    device: str = "cpu"  # torch device, for checkpoints
    cache: Path | None = field(default_factory=default_cache_dir)  # feature cache directory; None: no cache
    embedder: dict = field(default_factory=dict)  # the model's own loader options, e.g. dlib's detector

    def for_model(self, model: ModelRef) -> "EvalOptions":
        """These options with every setting left None filled in for ``model``."""
        recorded = dict(model.manifest().get("evaluation") or {})
        return replace(self, flip=self.flip or recorded.get("flip") or "none",
                       pca=self.pca if self.pca is not None else recorded.get("pca"),
                       # chosen on View 1: centring costs a narrow-cone (teacher-geometry) model accuracy
                       center=self.center if self.center is not None else recorded.get("center") is not False,
                       # a descriptor's metric is part of the model, not a knob (dlib's card: Euclidean)
                       metric=self.metric or recorded.get("metric") or "cosine")


def features_for(model: ModelRef, options: EvalOptions, root: Path, paths: list[str],
                 landmarks: dict | None = None, alignment: dict | None = None) -> tuple[FeatureSet, dict]:
    """Features of the images ``paths`` under ``root`` (from the cache when it has them), cut by the
    model's own detector or from ``landmarks`` (described by ``alignment``). Returns the features
    and ``info``: cache_file, seconds, embedder (its name), alignment (as reports state it)."""
    # the embedder always returns mirrored-crop features when a flip mode is asked for; the
    # evaluation combines them (so one cache serves none/sum/concat)
    embedder = load_embedder(model, flip="none" if options.flip == "none" else "sum", batch_size=options.batch_size,
                             fallback="center_crop", policy=options.policy, device=options.device, **options.embedder)
    detections = use_detection_cache(embedder, options.cache) if options.cache and landmarks is None else None
    # the cache key names how crops are found: the detector and its pyramid settings, or a landmark
    # file; LFW and MegaFace runs of one model share the cache
    found_by = {"source": "detector"} | ({"detector": detector_config(detections.detector)} if detections else {})
    config = feature_config(embedder, alignment if landmarks is not None else found_by, root)
    cache_file = options.cache / f"{cache_key(config)}.npz" if options.cache else None
    t0 = time.perf_counter()
    feats = compute_features(embedder, root, paths, cache_file=cache_file, config=config, landmarks=landmarks,
                             batch_size=options.batch_size, need_flipped=options.flip != "none")
    if detections is not None:
        detections.save()
    return feats, {"cache_file": str(cache_file) if cache_file else None, "seconds": time.perf_counter() - t0,
                   "embedder": embedder.name, "alignment": alignment if landmarks is not None else embedder.alignment}


def image_root(images: str | Path | None, first: str) -> Path:
    """The LFW image root (default: the shared data's), checked on the first image it must hold."""
    root = Path(images) if images else lfw_root() / "images"
    if not root.is_dir():
        raise DataNotFoundError(f"image root {root} does not exist.")
    if not (root / first).is_file() and (root / "images" / first).is_file():
        root = root / "images"  # accept the LFW folder itself (which holds images/)
    if not (root / first).is_file():
        raise DataNotFoundError(f"{root / first} does not exist: --images must be laid out as Name/Name_NNNN.jpg.")
    return root


def check_served_options(model: ModelRef, options: EvalOptions) -> None:
    """A calibration written beside a model is the service's: it must be measured with the options
    the service loads the model with (its card's ``serve``)."""
    served = model.serve_options
    if any(options.embedder.get(k) != v for k, v in served.items()):
        how = ", ".join(f"{k}={v}" for k, v in served.items())
        hint = model.manifest().get("calibrate")
        raise ConfigError(f"the service runs model {model.id} with {how} (its card's \"serve\"): calibrate it with the same "
                          "options" + (f", as its card says: {hint}" if hint else "") + ".")


# --------------------------------------------------------------------------- LFW View 2
def lfw(model: ModelRef, options: EvalOptions, out: str | Path, pairs: str | Path | None = None,
        images: str | Path | None = None, landmarks: str | Path | None = None, landmark_scale: float = 1.0,
        write_calibration: bool = False, command: str = "") -> dict:
    """LFW View 2, SphereFace's 10-fold protocol: ``out``/lfw.{json,md}, ROC and score plots, and
    the thresholds in ``out``/calibration.json (``write_calibration``: beside the model too)."""
    from ..image import load_image
    from ..landmarks import check_landmarks_fit, read_landmark_file

    options = options.for_model(model)
    if write_calibration:
        check_served_options(model, options)
    pairs_file = Path(pairs) if pairs else lfw_root() / "pairs.txt"
    pair_list = protocol_lfw.read_pairs(pairs_file)
    names = pair_list.images()
    root = image_root(images, names[0])
    missing = [p for p in names if not (root / p).is_file()]
    if missing:
        raise DataNotFoundError(f"{len(missing)} images of the pairs are missing under {root}, e.g. {missing[0]}; "
                                "no pair may be dropped, so fix the image root.")
    points, alignment = None, None
    if landmarks:
        table = read_landmark_file(landmarks, landmark_scale)
        absent = [p for p in names if p not in table]
        if absent:
            raise ConfigError(f"{landmarks} has no landmarks for {len(absent)} images of the pairs, e.g. {absent[0]}.")
        # one cheap check against a wrong --landmark-scale before any work
        check_landmarks_fit(table[names[0]], load_image(root / names[0]).shape, names[0], landmark_scale)
        points = {p: table[p] for p in names}
        alignment = {"source": "landmarks", "file": display_path(landmarks), "sha1": file_digest(landmarks, "sha1"),
                     "scale": landmark_scale}
    feats, info = features_for(model, options, root, names, points, alignment)
    alignment = info["alignment"]
    left, right = feats.vectors(pair_list.left, options.flip), feats.vectors(pair_list.right, options.flip)
    protocol = protocol_lfw.ten_fold(left, right, pair_list.same, pair_list.folds, center=options.center, pca=options.pca,
                                     metric=options.metric)
    plain = protocol_lfw.cosine_scores(left, right)
    no_face_imgs = {p for p, s in zip(feats.paths, feats.sources) if s == "center_crop"}
    rep = protocol_lfw.LfwReport(protocol=protocol, plain_scores=plain, same=pair_list.same, flip=options.flip,
                                 no_face=len(no_face_imgs), images=len(names), alignment=alignment)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = rep.to_dict()
    no_face_pairs = sum(1 for a, b in zip(pair_list.left, pair_list.right) if a in no_face_imgs or b in no_face_imgs)
    d.update(model=model.label, pairs_file=display_path(pairs_file), images_root=display_path(root), no_face_pairs=no_face_pairs,
             alignment_sources=feats.source_counts(), no_face_images=sorted(no_face_imgs),
             embedder=info["embedder"], feature_seconds=info["seconds"],
             cache_file=Path(info["cache_file"]).name if info["cache_file"] else None, command=command)
    d["misclassified_pairs"] = misclassified(pair_list, protocol, no_face_imgs)
    cal = measure_calibration(feats, options.flip, metrics.best_threshold(plain, pair_list.same),
                              f"faceverify eval lfw on {pairs_file.name} ({d['pairs']} pairs), alignment {alignment['source']}",
                              model)
    d["calibration"] = cal
    calibration.write(out / "calibration.json", cal)
    d["calibration_file"] = "calibration.json"  # beside lfw.json; the service's comes from View 1
    if write_calibration:
        calibration.write(model.calibration_file, cal)
    report.write_json(out / "lfw.json", d)
    (out / "lfw.md").write_text(report.lfw_markdown(d, command))
    report.plot_roc(out / "lfw_roc.png", {f"{model.path.name} (AUC {rep.auc:.4f})": (rep.roc.far, rep.roc.tar)},
                    "LFW ROC (all pairs, plain cosine)")
    report.plot_histogram(out / "lfw_scores.png", plain[pair_list.same], plain[~pair_list.same], "LFW pair scores",
                          {"best acc": cal["thresholds"]["best_accuracy"], "FAR 1e-3": cal["thresholds"]["far_1e-3"]})
    return d


def measure_calibration(feats: FeatureSet, flip: str, best_accuracy: float, source: str, model: ModelRef) -> dict:
    """The service's thresholds over every pair of the evaluated images (identity = folder name)."""
    return calibration.measure(feats.vectors(feats.paths, flip), [p.split("/")[0] for p in feats.paths], flip,
                               best_accuracy, source, model.path.name)


def misclassified(pairs, protocol, no_face_imgs: set, limit: int = 1000) -> dict:
    """The pairs the 10-fold protocol got wrong (score vs its fold's threshold; strict, as
    ``metrics.accuracy``), with whether a no-face (centre-crop) image is involved."""
    thr = np.array([f.threshold for f in protocol.folds])[pairs.folds]
    wrong = np.flatnonzero(np.where(pairs.same, protocol.scores <= thr, protocol.scores >= thr))
    rows = [{"pair": int(i) + 1, "fold": int(pairs.folds[i]) + 1, "same": bool(pairs.same[i]),
             "left": pairs.left[i], "right": pairs.right[i], "score": float(protocol.scores[i]),
             "threshold": float(thr[i]), "no_face": pairs.left[i] in no_face_imgs or pairs.right[i] in no_face_imgs}
            for i in wrong[:limit]]
    return {"count": int(wrong.size), "false_rejects": int(pairs.same[wrong].sum()),
            "false_accepts": int((~pairs.same[wrong]).sum()),
            "with_no_face_image": int(sum(pairs.left[i] in no_face_imgs or pairs.right[i] in no_face_imgs for i in wrong)),
            "pairs": rows, "truncated": bool(wrong.size > limit)}


# --------------------------------------------------------------------------- LFW View 1
def view1(model: ModelRef, options: EvalOptions, out: str | Path, dev_pairs: tuple | list | None = None,
          images: str | Path | None = None, write_calibration: bool = False, command: str = "") -> dict:
    """LFW View 1 as the LFW readme defines it: develop on pairsDevTrain, measure on pairsDevTest;
    writes ``out``/view1.{json,md} and the service's calibration (``write_calibration``: beside the
    model, where ``faceverify serve``/``verify`` read it). Pairs whose images are missing (the
    shared copy lacks Betsy_Coffin_0001) are skipped and listed."""
    options = options.for_model(model)
    if write_calibration:
        check_served_options(model, options)
    files = dev_pairs or [lfw_root() / "pairsDevTrain.txt", lfw_root() / "pairsDevTest.txt"]
    views = [protocol_lfw.read_pairs(f) for f in files]
    root = image_root(images, views[0].left[0])
    left, right, same, fold, skipped = [], [], [], [], []
    for k, pairs in enumerate(views):
        for a, b, s in zip(pairs.left, pairs.right, pairs.same):
            if not ((root / a).is_file() and (root / b).is_file()):
                skipped.append(f"{Path(pairs.source).name}: {a} {b}")
                continue
            left.append(a), right.append(b), same.append(s), fold.append(k)
    same, fold = np.array(same), np.array(fold)
    feats, info = features_for(model, options, root, list(dict.fromkeys(left + right)))
    alignment = info["alignment"]
    # two "folds": DevTrain supplies mu, PCA and the threshold for DevTest (fold 2 of ten_fold)
    left_vectors, right_vectors = feats.vectors(left, options.flip), feats.vectors(right, options.flip)
    protocol = protocol_lfw.ten_fold(left_vectors, right_vectors, same, fold, center=options.center, pca=options.pca,
                                     metric=options.metric)
    plain = protocol_lfw.cosine_scores(left_vectors, right_vectors)  # the service's score: no centring
    test = protocol.folds[1]
    d = {"view": 1, "model": model.label, "accuracy_devtest": test.accuracy, "threshold": test.threshold,
         "pairs_devtrain": int((fold == 0).sum()), "pairs_devtest": int((fold == 1).sum()), "skipped_pairs": skipped,
         "flip": options.flip, "center": options.center, "pca": options.pca, "metric": options.metric,
         "alignment": alignment, "alignment_sources": feats.source_counts(), "feature_seconds": info["seconds"],
         "command": command}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cal = measure_calibration(feats, options.flip, metrics.best_threshold(plain[fold == 0], same[fold == 0]),
                              f"faceverify eval lfw-view1 (LFW View 1 images: pairsDevTrain + pairsDevTest), alignment "
                              f"{alignment['source']}", model)
    # each operating point's accuracy on pairsDevTest with the service's score: the default
    # operating point is chosen here, on View 1, never on the test view
    test_plain, test_same = plain[fold == 1], same[fold == 1]
    d["devtest_accuracy_at"] = {point: metrics.accuracy(test_plain, test_same, t) for point, t in cal["thresholds"].items()}
    d["devtest_best_accuracy"] = metrics.optimistic_accuracy(test_plain, test_same)[0]  # best threshold on DevTest itself
    cal["default_operating_point"] = calibration.default_operating_point(d["devtest_accuracy_at"], d["devtest_best_accuracy"])
    d["calibration"] = cal
    calibration.write(out / "calibration.json", cal)
    if write_calibration:
        calibration.write(model.calibration_file, cal)
    report.write_json(out / "view1.json", d)
    (out / "view1.md").write_text(
        f"# LFW View 1 (development)\n\n`{command}`\n\nAccuracy on pairsDevTest ({d['pairs_devtest']} pairs, "
        f"threshold {test.threshold:.4f} from {d['pairs_devtrain']} pairsDevTrain pairs): "
        f"**{100 * test.accuracy:.2f}%**. Skipped (missing images): {len(skipped)}.\n")
    return d


# --------------------------------------------------------------------------- MegaFace
def megaface(model: ModelRef | None, options: EvalOptions, out: str | Path, probes: str | Path | None = None,
             distractors: str | Path | None = None, probe_features: str | Path | None = None,
             probe_list: str | Path | None = None, distractor_features: str | Path | None = None,
             synthetic_distractors: int = 0, sizes: list[int] | None = None, seed: int = 0, max_rank: int = 10,
             command: str = "", progress: Callable | None = None) -> dict:
    """MegaFace-style identification (rank-1, CMC) and TAR@FAR with distractors: ``out``/megaface.{json,md}
    and plots. Probes: a folder (identities with >= 2 images; default the shared LFW), or
    ``probe_features`` + ``probe_list`` (then ``model`` is not used). Distractors: ``distractor_features``,
    a folder, ``synthetic_distractors`` random unit vectors (a speed test only), or by default the
    probe folder's one-image identities. ``progress(n, result)`` is called after each distractor set size."""
    feats, info = None, {}
    if probe_features:
        if not probe_list:
            raise ConfigError("--probe-features needs --probe-list (one 'identity/image' line per row).")
        options = replace(options, flip=options.flip or "none")  # features given as files are used as they are
        probe_feats = np.asarray(protocol_megaface.load_features_npy(probe_features), dtype=np.float32)
        probe_names = protocol_megaface.read_feature_list(probe_list, probe_feats.shape[0])
        model_label = f"features:{probe_features}"
    else:
        options = options.for_model(model)
        probe_root = Path(probes) if probes else lfw_root() / "images"
        probe_names = protocol_megaface.scan_folder(probe_root)
        if not probe_names:
            raise DataNotFoundError(f"no images under {probe_root}.")
        model_label = str(model)
    identities = np.array([Path(p).parts[0] if len(Path(p).parts) > 1 else "" for p in probe_names])
    ids, counts = np.unique(identities, return_counts=True)
    count_of = dict(zip(ids, counts))
    multi = np.array([count_of[i] >= 2 and i != "" for i in identities])
    distractor_names: list[str] = []
    distractor_root = None
    if synthetic_distractors or distractor_features:
        pass
    elif distractors:
        distractor_root = Path(distractors)
        distractor_names = protocol_megaface.scan_folder(distractor_root)
    elif not probe_features:
        distractor_root = probe_root
        distractor_names = [p for p, m in zip(probe_names, multi) if not m]
    else:
        raise ConfigError("give distractors: --distractor-features, --distractors DIR or --synthetic-distractors N.")
    if probe_features:
        probe_vectors = probe_feats[multi]
    else:
        wanted = [p for p, m in zip(probe_names, multi) if m]
        if distractor_root == probe_root:
            feats, info = features_for(model, options, probe_root, wanted + distractor_names)
            probe_vectors = feats.vectors(wanted, options.flip)
            distractor_vectors = feats.vectors(distractor_names, options.flip)
        else:
            feats, info = features_for(model, options, probe_root, wanted)
            probe_vectors = feats.vectors(wanted, options.flip)
            if distractor_root is not None:
                dfeats, _ = features_for(model, options, distractor_root, distractor_names)
                distractor_vectors = dfeats.vectors(distractor_names, options.flip)
    probe_ids = identities[multi]
    if synthetic_distractors:
        distractor_vectors = protocol_megaface.synthetic_unit_vectors(synthetic_distractors, probe_vectors.shape[1], seed=seed + 1)
    elif distractor_features:
        distractor_vectors = protocol_megaface.load_features_npy(distractor_features)
    if len(distractor_vectors) == 0:
        raise ConfigError("the distractor set is empty.")
    distractor_vectors = np.asarray(distractor_vectors, dtype=np.float32)
    result = protocol_megaface.evaluate(probe_vectors, probe_ids, distractor_vectors, sizes=sizes, seed=seed, max_rank=max_rank,
                                        synthetic=bool(synthetic_distractors), progress=progress)
    d = result.to_dict()
    d.update(model=model_label, flip=options.flip, command=command, embedder=info.get("embedder"),
             feature_seconds=info.get("seconds"), cache_file=info.get("cache_file"))
    if feats is not None and not synthetic_distractors:
        d["alignment_sources"] = feats.source_counts()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "megaface.json", d)
    (out / "megaface.md").write_text(report.megaface_markdown(d, command))
    report.plot_cmc(out / "megaface_cmc.png", {f"{s.distractors:,}": s.cmc for s in result.sizes},
                    "MegaFace-style CMC" + (" (SYNTHETIC distractors: speed only)" if synthetic_distractors else ""))
    impostor = protocol_megaface.random_impostor_scores(probe_vectors, distractor_vectors, seed=seed)
    report.plot_histogram(out / "megaface_scores.png", result.genuine_scores, impostor, "probe-gallery vs probe-distractor scores",
                          {f"FAR {k}": v.threshold for k, v in result.sizes[-1].tar.items()},
                          impostor_label="probe-distractor (random sample)")
    return d
