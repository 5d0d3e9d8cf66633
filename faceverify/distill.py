"""Distillation from a teacher embedder into a student network.

Three parts, each usable on its own:

* **Views.** A view of a training face is a deterministic augmentation of its 160x160 wide canvas
  (``align.WIDE_160``, stored by ``faceverify prep --wide``): low resolution, blur, colour, grey,
  JPEG quality, then a jittered similarity (scale, rotation, shift) applied to the face's five
  points, and a mirror. View 0 is the face as detected, view 1 its mirror. The same view is cut
  for the student (its template) and for the teacher (its own alignment, e.g. dlib's 150x150
  chip), so both see one detection and one augmentation.
* **Teacher targets.** ``TeacherTargets`` embeds every face in every view with the teacher once,
  caches the result beside the packed set (keyed by image content and teacher), shows progress,
  and resumes after a kill (work is cut into chunks written atomically).
* **Student crops.** ``StudentCrops`` cuts every face in every view at the student's template once
  (the views are deterministic), so training reads uint8 crops instead of re-rendering them: the
  rendering (resize, blur, JPEG, warp) otherwise takes about 40% of a 2-core CPU's training time.
* **Losses.** Teacher targets are centred (the teacher's mean vector removed) and renormalised:
  dlib's descriptors sit in a narrow cone (two random faces have cosine ~0.84), so matching raw
  vectors teaches mostly the shared mean direction. ``DistillLoss`` matches the student to the
  centred targets by cosine and/or matches the batch's pairwise cosine-similarity matrices
  (relational distillation, Park et al., CVPR 2019, eq. 3 with a cosine potential).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from .align import WIDE_160, align_face
from .errors import ConfigError, DataNotFoundError
from .packed import PackedFaces, write_json_atomic, write_npy_atomic
from .transforms import crops_to_tensor

VIEW_VERSION = 1  # bump when view_params/render_view change: cached targets are keyed by it
WIDE_IOD = 40.0  # eye distance on the wide canvas, px
WIDE_CENTRE = WIDE_160.mean(0)


# ---- views ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewParams:
    flip: bool = False
    scale: float = 1.0  # of the face (jittered points spread by this factor)
    angle: float = 0.0  # degrees
    shift: tuple[float, float] = (0.0, 0.0)  # px on the canvas
    lowres: float = 1.0  # < 1: downsample the canvas by this factor and back up
    blur: float = 0.0  # Gaussian sigma, px
    brightness: float = 0.0  # added, in [0, 255] units
    contrast: float = 1.0
    saturation: float = 1.0
    grey: bool = False
    jpeg: int = 0  # JPEG quality (0 = none)


def view_params(key: str, view: int) -> ViewParams:
    """The augmentation of view ``view`` of the face with content key ``key`` (its sha1)."""
    if view == 0:
        return ViewParams()
    if view == 1:
        return ViewParams(flip=True)
    seed = int.from_bytes(hashlib.sha1(f"{key}:{view}:{VIEW_VERSION}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return ViewParams(
        flip=bool(rng.random() < 0.5),
        scale=float(math.exp(rng.uniform(math.log(0.9), math.log(1.1)))),
        angle=float(rng.uniform(-10.0, 10.0)),
        shift=(float(rng.uniform(-0.06, 0.06) * WIDE_IOD), float(rng.uniform(-0.06, 0.06) * WIDE_IOD)),
        lowres=float(rng.uniform(0.35, 0.75)) if rng.random() < 0.3 else 1.0,
        blur=float(rng.uniform(0.4, 1.4)) if rng.random() < 0.25 else 0.0,
        brightness=float(rng.uniform(-25.0, 25.0)),
        contrast=float(rng.uniform(0.75, 1.25)),
        saturation=float(rng.uniform(0.6, 1.4)),
        grey=bool(rng.random() < 0.1),
        jpeg=int(rng.integers(30, 91)) if rng.random() < 0.4 else 0,
    )


def render_view(canvas: np.ndarray, p: ViewParams) -> tuple[np.ndarray, np.ndarray]:
    """(augmented canvas, the face's five points on it) for view ``p`` of a wide canvas."""
    img = canvas
    if p.lowres < 1.0:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(8, round(w * p.lowres)), max(8, round(h * p.lowres))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if p.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), p.blur)
    if p.brightness or p.contrast != 1.0 or p.saturation != 1.0 or p.grey:
        f = img.astype(np.float32)
        grey = f @ np.float32([0.299, 0.587, 0.114])
        f = grey[..., None] + (f - grey[..., None]) * (0.0 if p.grey else p.saturation)
        f = (f - 127.5) * p.contrast + 127.5 + p.brightness
        img = np.clip(f, 0, 255).astype(np.uint8)
    if p.jpeg:
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, p.jpeg])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    theta = math.radians(p.angle)
    rot = p.scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], np.float32)
    points = (WIDE_160 - WIDE_CENTRE) @ rot.T + WIDE_CENTRE + np.float32(p.shift)
    return np.ascontiguousarray(img), points.astype(np.float32)


def student_view(canvas: np.ndarray, p: ViewParams, template: str) -> np.ndarray:
    """The student's crop (``template``) of view ``p``."""
    img, points = render_view(canvas, p)
    crop = align_face(img, points, template)
    return np.ascontiguousarray(crop[:, ::-1]) if p.flip else crop


def teacher_view(canvas: np.ndarray, p: ViewParams, teacher) -> np.ndarray:
    """The teacher's own crop of view ``p`` (``teacher.crop_from_landmarks``)."""
    img, points = render_view(canvas, p)
    crop = teacher.crop_from_landmarks(img, points)
    return np.ascontiguousarray(crop[:, ::-1]) if p.flip else crop


# ---- teacher targets --------------------------------------------------------------------------
def teacher_key(teacher_name: str, teacher_config: dict, faces: PackedFaces, views: int) -> str:
    content = hashlib.sha1("\n".join(faces.sha1).encode()).hexdigest()
    spec = json.dumps({"teacher": teacher_name, "config": teacher_config, "views": views, "view_version": VIEW_VERSION,
                       "content": content}, sort_keys=True, default=str)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


_worker: dict = {}


def _init_worker(root: str, spec: str, kwargs: dict) -> None:
    # one core per worker process: the processes are the parallelism (dlib's BLAS would oversubscribe)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)
    from .loaders import load_embedder
    from .models import resolve_model

    if resolve_model(spec).kind == "onnx":  # onnxruntime's own pool: one thread per worker process too
        kwargs = {**kwargs, "threads": 1}
    _worker["faces"] = PackedFaces(root)
    _worker["teacher"] = load_embedder(spec, **kwargs)


def _embed_chunk(args: tuple[int, int, int, int, str]) -> int:
    index, start, stop, views, out = args
    faces, teacher = _worker["faces"], _worker["teacher"]
    result = []
    for view in range(views):
        crops = [teacher_view(faces.wide(i), view_params(faces.sha1[i], view), teacher) for i in range(start, stop)]
        result.append(teacher.embed_crops(np.stack(crops)))
    write_npy_atomic(Path(out) / f"chunk_{index:05d}.npy", np.stack(result).astype(np.float32))
    return stop - start


class TeacherTargets:
    """Teacher embeddings of every face of a packed set in ``views`` views:
    ``PACKED/teachers/<key>/targets.npy`` of shape (views, N, D), float32.

    ``spec`` is anything ``load_embedder`` takes (``dlib``, an ``.onnx`` file, a faceverify model).
    """

    def __init__(self, faces: PackedFaces, spec: str, views: int = 2, kwargs: dict | None = None, chunk: int = 256):
        if views < 1:
            raise ConfigError(f"distill.views must be >= 1 (got {views}).")
        if not faces.has_wide:
            faces.wide(0)  # raises the DataNotFoundError that says how to prepare the set
        self.faces, self.spec, self.views, self.kwargs, self.chunk = faces, str(spec), int(views), dict(kwargs or {}), int(chunk)

    @cached_property
    def identity(self) -> tuple[str, dict]:
        """(teacher name, settings) that key the cache: loads the teacher once per object."""
        from .loaders import load_embedder
        from .models import resolve_model

        teacher = load_embedder(self.spec, **self.kwargs)
        model = resolve_model(self.spec)
        if model.kind == "dlib":  # dlib's own settings (detector, points, version) decide its vectors
            config = {k: v for k, v in (getattr(teacher, "config", None) or {}).items() if isinstance(v, (str, int, float, bool))}
        else:  # a network's crops come from the views' points, not its aligner: its weights are what counts
            config = {"sha256": model.sha256()}  # so retrained weights never reuse targets
        return teacher.name, {"spec": self.spec, **config}

    @property
    def directory(self) -> Path:
        name, config = self.identity
        return self.faces.root / "teachers" / teacher_key(name, config, self.faces, self.views)

    def build(self, workers: int = 1, progress: bool = True) -> Path:
        """Compute what is missing (resumable) and return the path of ``targets.npy``."""
        out = self.directory
        final = out / "targets.npy"
        if final.is_file():
            return final
        out.mkdir(parents=True, exist_ok=True)
        name, config = self.identity
        n = len(self.faces)
        write_json_atomic(out / "meta.json", {"teacher": name, "config": config, "views": self.views, "faces": n,
                                              "view_version": VIEW_VERSION, "packed": str(self.faces.root)})
        ranges = [(k, s, min(s + self.chunk, n)) for k, s in enumerate(range(0, n, self.chunk))]
        todo = [(k, s, e, self.views, str(out)) for k, s, e in ranges if not (out / f"chunk_{k:05d}.npy").is_file()]
        bar = tqdm(total=n * self.views, initial=(n - sum(e - s for _, s, e, _, _ in todo)) * self.views, unit="view",
                   desc=f"teacher {name}", disable=not progress, smoothing=0.05)
        started = time.perf_counter()
        if todo:
            if workers <= 1:
                _init_worker(str(self.faces.root), self.spec, self.kwargs)
                for item in todo:
                    bar.update(_embed_chunk(item) * self.views)
            else:
                with mp.get_context("spawn").Pool(workers, _init_worker, (str(self.faces.root), self.spec, self.kwargs)) as pool:
                    for done in pool.imap_unordered(_embed_chunk, todo):
                        bar.update(done * self.views)
        bar.close()
        targets = np.concatenate([np.load(out / f"chunk_{k:05d}.npy") for k, _, _ in ranges], axis=1)
        write_npy_atomic(final, targets)
        for k, _, _ in ranges:
            (out / f"chunk_{k:05d}.npy").unlink(missing_ok=True)
        meta = json.loads((out / "meta.json").read_text())
        meta.update(dim=int(targets.shape[2]), seconds_last_run=round(time.perf_counter() - started, 1))
        write_json_atomic(out / "meta.json", meta)
        return final

    def load(self) -> np.ndarray:
        path = self.directory / "targets.npy"
        if not path.is_file():
            raise DataNotFoundError(f"teacher targets {path} are not computed yet; run TeacherTargets.build() "
                                    "(faceverify train does it first).")
        return np.load(path, mmap_mode="r")


def _cut_chunk(args: tuple[int, int, int, int, str, str]) -> int:
    index, start, stop, views, template, out = args
    faces = _worker["faces"]
    crops = np.lib.format.open_memmap(Path(out) / "crops.partial.npy", mode="r+")
    for view in range(views):
        crops[view, start:stop] = np.stack([student_view(faces.wide(i), view_params(faces.sha1[i], view), template)
                                            for i in range(start, stop)])
    crops.flush()
    del crops
    (Path(out) / "done" / f"{index:05d}").touch()
    return stop - start


def _init_cut_worker(root: str) -> None:
    _worker["faces"] = PackedFaces(root)


class StudentCrops:
    """Every face of a packed set in ``views`` views at the student's ``template``:
    ``PACKED/students/<key>/crops.npy`` of shape (views, N, H, W, 3), uint8, the same views the
    teacher labelled. Built in chunks written in place; a kill loses at most the chunks in flight."""

    def __init__(self, faces: PackedFaces, template: str, views: int, chunk: int = 512):
        from .align import template_points

        self.faces, self.template, self.views, self.chunk = faces, template, int(views), int(chunk)
        self.size = template_points(template)[1]

    @property
    def directory(self) -> Path:
        content = hashlib.sha1("\n".join(self.faces.sha1).encode()).hexdigest()
        spec = json.dumps({"template": self.template, "views": self.views, "view_version": VIEW_VERSION, "content": content},
                          sort_keys=True)
        return self.faces.root / "students" / hashlib.sha256(spec.encode()).hexdigest()[:16]

    def build(self, workers: int = 1, progress: bool = True) -> Path:
        out = self.directory
        final = out / "crops.npy"
        if final.is_file():
            return final
        (out / "done").mkdir(parents=True, exist_ok=True)
        n = len(self.faces)
        partial = out / "crops.partial.npy"
        if not partial.is_file():
            np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(self.views, n, *self.size, 3)).flush()
            for stale in (out / "done").iterdir():  # markers of an earlier file that no longer exists
                stale.unlink()
        write_json_atomic(out / "meta.json", {"template": self.template, "views": self.views, "faces": n,
                                              "view_version": VIEW_VERSION, "packed": str(self.faces.root)})
        ranges = [(k, s, min(s + self.chunk, n)) for k, s in enumerate(range(0, n, self.chunk))]
        todo = [(k, s, e, self.views, self.template, str(out)) for k, s, e in ranges if not (out / "done" / f"{k:05d}").exists()]
        bar = tqdm(total=n, initial=n - sum(e - s for _, s, e, *_ in todo), unit="face", desc=f"student crops {self.template}",
                   disable=not progress, smoothing=0.05)
        if todo:
            if workers <= 1:
                _init_cut_worker(str(self.faces.root))
                for item in todo:
                    bar.update(_cut_chunk(item))
            else:
                with mp.get_context("spawn").Pool(workers, _init_cut_worker, (str(self.faces.root),)) as pool:
                    for done in pool.imap_unordered(_cut_chunk, todo):
                        bar.update(done)
        bar.close()
        os.replace(partial, final)
        return final


def unit_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(views, N, D) raw teacher vectors -> (unit vectors, their mean, E||unit - mean||^2), the
    mean and spread over every face and view of the training set (never over test images)."""
    unit = (targets / np.linalg.norm(targets, axis=2, keepdims=True).clip(1e-12)).astype(np.float32)
    mean = unit.reshape(-1, unit.shape[2]).mean(0, dtype=np.float64)
    spread = float(((unit.reshape(-1, unit.shape[2]) - mean) ** 2).sum(1).mean())
    return unit, mean.astype(np.float32), spread


def centred_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(views, N, D) raw teacher vectors -> (unit vectors after removing the mean direction, the mean).
    The mean is taken over every face and view of the training set (never over test images)."""
    unit = targets / np.linalg.norm(targets, axis=2, keepdims=True).clip(1e-12)
    mean = unit.reshape(-1, unit.shape[2]).mean(0)
    centred = unit - mean
    return (centred / np.linalg.norm(centred, axis=2, keepdims=True).clip(1e-12)).astype(np.float32), mean.astype(np.float32)


# ---- the student's data -----------------------------------------------------------------------
class DistillFaces(Dataset):
    """(student crop of a random view, label or -1, the teacher's centred target for that view).

    ``indices`` select faces of ``faces``; ``labels`` are the margin head's classes (-1: the face
    takes part through the distillation term only). Views are drawn per (seed, epoch, index), so
    batches are the same with any number of workers and after ``--resume``.
    """

    def __init__(self, faces: PackedFaces, targets: np.ndarray, indices: np.ndarray, labels: np.ndarray,
                 template: str, seed: int = 0, views: int | None = None, crops: str | Path | None = None):
        self.faces, self.targets, self.template, self.seed = faces, targets, template, int(seed)
        self.crops_path, self._crops = (str(crops) if crops else None), None  # StudentCrops file, mapped per process
        self.indices = np.asarray(indices, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.views = int(views or targets.shape[0])
        if self.views > targets.shape[0]:
            raise ConfigError(f"{self.views} views asked for, the teacher targets have {targets.shape[0]}.")

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):
        return {**self.__dict__, "_crops": None}  # each DataLoader worker maps the file itself

    def __getitem__(self, key):
        position, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        index = int(self.indices[position])
        rng = np.random.default_rng((self.seed, epoch, index))
        view = int(rng.integers(self.views))
        if self.crops_path:
            if self._crops is None:
                self._crops = np.load(self.crops_path, mmap_mode="r")
            crop = np.array(self._crops[view, index])
        else:
            crop = student_view(self.faces.wide(index), view_params(self.faces.sha1[index], view), self.template)
        target = torch.from_numpy(np.array(self.targets[view, index], np.float32))
        return crops_to_tensor(crop[None])[0], int(self.labels[position]), target


def select_faces(faces: PackedFaces, sources: list[str], min_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Faces of the named sources (first path component), byte-identical duplicates dropped, and
    head labels: identities with at least ``min_images`` faces get a class, the rest -1."""
    wanted = set(sources)
    known = {p.split("/", 1)[0] for p in faces.paths}
    missing = wanted - known
    if missing:
        raise DataNotFoundError(f"the packed set {faces.root} has no faces from {sorted(missing)} (it has {sorted(known)}).")
    seen, keep = set(), []
    for i, (path, digest) in enumerate(zip(faces.paths, faces.sha1)):
        if path.split("/", 1)[0] in wanted and digest not in seen:
            seen.add(digest)
            keep.append(i)
    keep = np.asarray(keep, np.int64)
    raw = faces.labels[keep]
    counts = np.bincount(raw[raw >= 0], minlength=faces.num_classes)
    classes = np.flatnonzero(counts >= max(1, min_images))
    remap = np.full(faces.num_classes + 1, -1, np.int64)
    remap[classes] = np.arange(classes.size)
    labels = np.where(raw >= 0, remap[raw], -1)
    return keep, labels, [faces.classes[c] for c in classes]


# ---- losses -----------------------------------------------------------------------------------
class DistillLoss(nn.Module):
    """``cosine``: mean (1 - cos(P s, t)) over the batch, P a linear projection onto the teacher's
    dimension (identity when the dimensions agree and ``projection`` is off).
    ``relational``: mean squared difference of the off-diagonal cosine-similarity matrices of the
    student's embeddings and of the targets (Park et al., CVPR 2019, eq. 3-4 with cosine).
    ``raw``: the student's unit embedding s regresses the teacher's raw unit vector t (its mean
    included), mean ||s - t||^2 / E||t - mean||^2 (FitNets-style L2 hint, Romero et al., ICLR 2015, eq. 3): the
    cosine terms then act on s - mean, and the served embedding keeps the teacher's own geometry,
    which the centred direction alone loses (the length of each face's deviation from the mean).

    ``mean`` (the teacher's mean unit vector over the training views) given: targets are the raw
    unit vectors and are centred here; without it, targets arrive centred (``centred_targets``)."""

    def __init__(self, embedding_dim: int, teacher_dim: int, cosine: float = 1.0, relational: float = 0.0,
                 projection: bool | None = None, raw: float = 0.0, mean: np.ndarray | None = None, spread: float = 1.0):
        super().__init__()
        if projection is None:
            projection = embedding_dim != teacher_dim
        if not projection and embedding_dim != teacher_dim:
            raise ConfigError(f"the student's {embedding_dim}-d embedding cannot match {teacher_dim}-d teacher "
                              "targets without distill.projection: true.")
        if raw and (projection or mean is None):
            raise ConfigError("distill.raw needs the student's embedding in the teacher's space (same dimension, no "
                              "projection) and the teacher's mean.")
        self.project = nn.Linear(embedding_dim, teacher_dim, bias=False) if projection else nn.Identity()
        self.w_cosine, self.w_relational, self.w_raw = float(cosine), float(relational), float(raw)
        self.register_buffer("mean", None if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.spread = float(spread)

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        embedding = embedding.float()
        parts = {}
        loss = embedding.new_zeros(())
        if self.mean is not None:
            if self.w_raw:  # on the unit embedding: the served geometry is that of unit vectors
                embedding = F.normalize(embedding, dim=1)
                raw = (embedding - target).pow(2).sum(1).mean() / self.spread
                parts["distill_raw"] = raw.detach()
                loss = loss + self.w_raw * raw
                embedding = embedding - self.mean
            target = F.normalize(target - self.mean, dim=1)
        if self.w_cosine:
            cos = F.cosine_similarity(self.project(embedding), target, dim=1)
            parts["distill_cos"] = cos.mean().detach()
            loss = loss + self.w_cosine * (1.0 - cos).mean()
        if self.w_relational:
            s = F.normalize(embedding, dim=1)
            sim_s, sim_t = s @ s.T, target @ target.T
            off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
            rel = (sim_s - sim_t)[off].pow(2).mean()
            parts["distill_rel"] = rel.detach()
            loss = loss + self.w_relational * rel
        return loss, parts


class MultiTeacherLoss(nn.Module):
    """Several teachers in one distillation: one ``DistillLoss`` per teacher on its own slice of the
    concatenated targets, summed with the teachers' weights. The first teacher is the primary: the
    student's embedding lives in its space (same dimension; ``raw`` keeps its geometry). Every
    further teacher is reached through its own linear projection head (s -> its dimension) with the
    cosine and relational terms on its centred targets: the served embedding learns what the other
    teachers see without being forced into their coordinates (one projection head per teacher, as
    in multi-teacher feature distillation; the weights are chosen on LFW View 1)."""

    def __init__(self, losses: list[DistillLoss], dims: list[int], weights: list[float], names: list[str]):
        super().__init__()
        if not (len(losses) == len(dims) == len(weights) == len(names)):
            raise ConfigError("one loss, dimension, weight and name per teacher.")
        self.losses = nn.ModuleList(losses)
        self.dims, self.weights, self.names = list(dims), [float(w) for w in weights], list(names)

    @property
    def w_raw(self) -> float:
        return self.losses[0].w_raw

    @property
    def mean(self):
        return self.losses[0].mean

    def part_names(self, raw: bool) -> tuple[str, ...]:
        first = ("distill_cos", "distill_rel") + (("distill_raw",) if raw else ())
        return first + tuple(f"{p}_{n}" for n in self.names[1:] for p in ("distill_cos", "distill_rel"))

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss, parts, start = embedding.new_zeros((), dtype=torch.float32), {}, 0
        primary_mean = self.losses[0].mean
        centred = F.normalize(embedding.float(), dim=1) - primary_mean if primary_mean is not None else embedding
        for k, (fn, dim, weight) in enumerate(zip(self.losses, self.dims, self.weights)):
            part_loss, part = fn(embedding if k == 0 else centred, target[:, start : start + dim])
            start += dim
            loss = loss + weight * part_loss
            parts.update(part if k == 0 else {f"{key}_{self.names[k]}": v for key, v in part.items()})
        return loss, parts
