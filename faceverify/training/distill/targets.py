"""Cached, resumable work done once per packed set: ``TeacherTargets`` embeds every face in every
view with a teacher (keyed by image content and the teacher's weights or settings), and
``StudentCrops`` cuts every view at the student's template once, so training reads uint8 crops
instead of re-rendering them (the rendering takes about 40% of a 2-core CPU's training time
otherwise). Work is cut into chunks written atomically: a kill loses at most a chunk."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...errors import ConfigError, DataNotFoundError
from ...packed import PackedFaces, write_json_atomic, write_npy_atomic
from .views import VIEW_VERSION, student_view, teacher_view, view_params

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
    from ...loaders import load_embedder
    from ...models import resolve_model

    if resolve_model(spec).kind == "onnx":  # onnxruntime's own pool: one thread per worker process too
        kwargs = {**kwargs, "threads": 1}
    _worker["faces"] = PackedFaces(root)
    _worker["teacher"] = load_embedder(spec, **kwargs)


def _embed_chunk(args: tuple[int, int, int, np.ndarray, str]) -> int:
    """Fill chunk ``index`` (faces ``start:stop``) where ``missing`` (views, stop - start) says;
    entries never asked for stay NaN. Returns how many views it embedded."""
    index, start, stop, missing, out = args
    faces, teacher = _worker["faces"], _worker["teacher"]
    path = Path(out) / f"chunk_{index:05d}.npy"
    result = np.load(path) if path.is_file() else None
    for view in range(missing.shape[0]):
        todo = start + np.flatnonzero(missing[view])
        if not todo.size:
            continue
        crops = [teacher_view(faces.wide(int(i)), view_params(faces.sha1[int(i)], view), teacher) for i in todo]
        vectors = teacher.embed_crops(np.stack(crops)).astype(np.float32)
        if result is None:
            result = np.full((missing.shape[0], stop - start, vectors.shape[1]), np.nan, np.float32)
        result[view, todo - start] = vectors
    write_npy_atomic(path, result)
    return int(missing.sum())


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
        from ...loaders import load_embedder
        from ...models import resolve_model

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

    def build(self, workers: int = 1, progress: bool = True, needed: np.ndarray | None = None) -> Path:
        """Compute what is missing (resumable) and return the path of ``targets.npy``.

        ``needed`` (views, N) bool limits the work to the (view, face) pairs a run reads
        (``dataset.views_read``); the others stay NaN until a longer run asks for them."""
        out = self.directory
        final = out / "targets.npy"
        n = len(self.faces)
        needed = np.ones((self.views, n), bool) if needed is None else np.asarray(needed, bool)
        if needed.shape != (self.views, n):
            raise ConfigError(f"needed has shape {needed.shape}, the targets are ({self.views}, {n}).")
        ranges = [(k, s, min(s + self.chunk, n)) for k, s in enumerate(range(0, n, self.chunk))]
        if final.is_file():
            done = np.load(final, mmap_mode="r")
            if np.isfinite(done[:, :, 0])[needed].all():
                return final
            for k, s, e in ranges:  # a longer run: back to chunks (the file goes only once all are written)
                write_npy_atomic(out / f"chunk_{k:05d}.npy", np.array(done[:, s:e]))
            del done
            final.unlink()
        out.mkdir(parents=True, exist_ok=True)
        name, config = self.identity
        write_json_atomic(out / "meta.json", {"teacher": name, "config": config, "views": self.views, "faces": n,
                                              "view_version": VIEW_VERSION, "packed": str(self.faces.root)})
        todo = []
        for k, s, e in ranges:
            path = out / f"chunk_{k:05d}.npy"
            missing = needed[:, s:e] & ~np.isfinite(np.load(path)[:, :, 0]) if path.is_file() else needed[:, s:e]
            if missing.any():
                todo.append((k, s, e, missing, str(out)))
        total = int(needed.sum())
        bar = tqdm(total=total, initial=total - sum(int(m.sum()) for *_, m, _ in todo), unit="view",
                   desc=f"teacher {name}", disable=not progress, smoothing=0.05)
        started = time.perf_counter()
        if todo:
            if workers <= 1:
                _init_worker(str(self.faces.root), self.spec, self.kwargs)
                for item in todo:
                    bar.update(_embed_chunk(item))
            else:
                with mp.get_context("spawn").Pool(workers, _init_worker, (str(self.faces.root), self.spec, self.kwargs)) as pool:
                    for done in pool.imap_unordered(_embed_chunk, todo):
                        bar.update(done)
        bar.close()
        chunks = [np.load(out / f"chunk_{k:05d}.npy") if (out / f"chunk_{k:05d}.npy").is_file() else None for k, _, _ in ranges]
        dim = next((c.shape[2] for c in chunks if c is not None), None)
        if dim is None:
            raise ConfigError("the run reads no teacher targets (no view of any face is needed): check train.steps and "
                              "the recipe's sources.")
        targets = np.concatenate([c if c is not None else np.full((self.views, e - s, dim), np.nan, np.float32)
                                  for c, (_, s, e) in zip(chunks, ranges)], axis=1)
        write_npy_atomic(final, targets)
        for k, _, _ in ranges:
            (out / f"chunk_{k:05d}.npy").unlink(missing_ok=True)
        meta = json.loads((out / "meta.json").read_text())
        computed = np.isfinite(targets[:, :, 0])
        meta.update(dim=int(dim), computed=int(computed.sum()), complete=bool(computed.all()),
                    seconds_last_run=round(time.perf_counter() - started, 1))
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
        from ...align import template_points

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


def computed_rows(targets: np.ndarray) -> np.ndarray:
    """The (view, face) vectors of a (views, N, D) cache that were computed (a sparse one has NaN rows)."""
    rows = targets.reshape(-1, targets.shape[2])
    computed = np.isfinite(rows[:, 0])
    return rows if computed.all() else rows[computed]


def unit_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(views, N, D) raw teacher vectors -> (unit vectors, their mean, E||unit - mean||^2), the
    mean and spread over every face and view of the training set (never over test images)."""
    unit = (targets / np.linalg.norm(targets, axis=2, keepdims=True).clip(1e-12)).astype(np.float32)
    rows = computed_rows(unit)
    mean = rows.mean(0, dtype=np.float64)
    spread = float(((rows - mean) ** 2).sum(1).mean())
    return unit, mean.astype(np.float32), spread


def centred_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(views, N, D) raw teacher vectors -> (unit vectors after removing the mean direction, the mean).
    The mean is taken over every face and view of the training set (never over test images)."""
    unit = targets / np.linalg.norm(targets, axis=2, keepdims=True).clip(1e-12)
    mean = computed_rows(unit).mean(0)
    centred = unit - mean
    return (centred / np.linalg.norm(centred, axis=2, keepdims=True).clip(1e-12)).astype(np.float32), mean.astype(np.float32)


# ---- the student's data -----------------------------------------------------------------------
