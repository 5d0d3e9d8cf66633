"""The loaders: an Embedder (``faceverify.embedder``) for any model spec. A faceverify checkpoint
runs on PyTorch (``TorchEmbedder``), an ONNX file on onnxruntime (``OnnxEmbedder``: our exports, and
third-party embedders described by a model card's ``input``), dlib's descriptor on dlib
(``faceverify.dlib_embedder``). ``load_embedder(spec)`` picks one through the one resolver
(``faceverify.models``); torch, onnxruntime and dlib are imported only when their model is loaded."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import align_face
from .embedder import EmbedBatch, Embedder, check_flip
from .errors import CheckpointError, ConfigError
from .models import ModelRef, file_digest, resolve_model
from .paths import display_path
from .face_aligner import FaceAligner


class _CropEmbedder:
    """Shared part of the network embedders: align with the shared FaceAligner, run the network on
    crops (and mirrored crops) in batches."""

    def __init__(self, name: str, weights: Path, template: str, feature_dim: int, flip: str, batch_size: int, fallback: str,
                 aligner: FaceAligner | None, policy: str):
        self.name = name
        self.weights = Path(weights)
        self.flip = check_flip(flip)
        self.feature_dim = feature_dim
        self.dim = feature_dim * (2 if flip == "concat" else 1)
        self.batch_size = batch_size
        self.aligner = aligner or FaceAligner(template=template, policy=policy, fallback=fallback)
        if self.aligner.template != template:
            raise ConfigError(f"the model expects {template} crops but the aligner makes {self.aligner.template} crops")

    @property
    def config(self) -> dict:
        a = self.aligner
        return {"embedder": type(self).__name__, "model_sha1": file_digest(self.weights, "sha1"), "template": a.template,
                "policy": a.policy, "fallback": a.fallback}

    @property
    def alignment(self) -> dict:
        return {"source": "mtcnn", "fallback": self.aligner.fallback}

    def embed(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None) -> EmbedBatch:
        return self.embed_aligned(self.aligner.align_batch(list(images), None if landmarks is None else list(landmarks)))

    def embed_aligned(self, faces: Sequence[AlignedFace]) -> EmbedBatch:
        """Faces already aligned by this embedder's aligner (its crops) -> features, no second warp."""
        faces = list(faces)
        crops = np.stack([f.crop for f in faces]) if faces else np.zeros((0, 1, 1, 3), np.uint8)
        plain = self.embed_crops(crops)
        flipped = self.embed_crops(crops[:, :, ::-1]) if self.flip != "none" else None
        return EmbedBatch(plain, faces, flipped, self.flip)

    def crop_from_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The model's own aligned crop for five given points (e.g. a teacher view)."""
        return align_face(image, landmarks, self.aligner.template)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 aligned crops -> (N, feature_dim) float32."""
        if len(crops) == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        out = [self._forward(crops[i : i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchEmbedder(_CropEmbedder):
    """A faceverify checkpoint (``.pt`` file or a directory with ``model.pt``)."""

    def __init__(self, model_path: str | Path, flip: str = "none", batch_size: int = 64, fallback: str = "error",
                 device: str = "cpu", aligner: FaceAligner | None = None, policy: str = "largest_central"):
        import torch

        from .checkpoint import load_backbone

        self.model, self.info = load_backbone(model_path)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.model_path = Path(model_path)
        super().__init__(f"faceverify:{display_path(self.model_path)}", self.info.path, self.info.template, self.info.embedding_dim, flip, batch_size,
                         fallback, aligner, policy)

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from .transforms import crops_to_tensor

        with torch.inference_mode():
            return self.model(crops_to_tensor(crops).to(self.device)).float().cpu().numpy()


class OnnxEmbedder(_CropEmbedder):
    """An ONNX face embedder on onnxruntime: a file exported by ``faceverify.export`` (input
    ``(N, 3, H, W)`` crops normalised as ``transforms.crops_to_tensor``, template in its metadata),
    or any ONNX embedder described by a model card's ``input`` section::

        {"template": "112x112", "colour": "RGB" | "BGR", "mean": 127.5, "std": 127.5}

    (``(pixel - mean) / std``; a graph whose batch dimension is fixed at 1 is run one crop at a time)."""

    def __init__(self, onnx_path: str | Path, flip: str = "none", batch_size: int = 64, fallback: str = "error",
                 aligner: FaceAligner | None = None, policy: str = "largest_central", card_input: dict | None = None,
                 name: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        from .runtime import session_options

        try:
            self.session = ort.InferenceSession(str(onnx_path), session_options(threads), providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CheckpointError(f"{onnx_path}: cannot be loaded as an ONNX model ({exc}).") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        height, width = inp.shape[2], inp.shape[3]
        self.card_input = dict(card_input) if card_input else None
        if self.card_input:
            template = str(self.card_input.get("template", ""))
            colour = str(self.card_input.get("colour", "RGB")).upper()
            if colour not in ("RGB", "BGR"):
                raise ConfigError(f"{onnx_path}: the card's input colour must be RGB or BGR, not {colour!r}.")
            self._bgr = colour == "BGR"
            self._mean = np.float32(self.card_input.get("mean", 0.0))
            self._std = np.float32(self.card_input.get("std", 1.0))
        else:
            template = meta.get("faceverify.template") or ("112x112" if width == 112 else "112x96")
        if template != f"{height}x{width}" and isinstance(height, int):
            raise CheckpointError(f"{onnx_path}: input {height}x{width} does not match template {template}.")
        self._input = inp.name
        self._fixed_batch = isinstance(inp.shape[0], int) and inp.shape[0] == 1
        feature_dim = int(self.session.get_outputs()[0].shape[1])
        super().__init__(name or f"onnx:{display_path(onnx_path)}", Path(onnx_path), template, feature_dim, flip, batch_size, fallback, aligner, policy)

    def _tensor(self, crops: np.ndarray) -> np.ndarray:
        if self.card_input is None:
            from .transforms import crops_to_numpy

            return crops_to_numpy(crops)
        x = crops[..., ::-1] if self._bgr else crops
        return np.ascontiguousarray(((x.astype(np.float32) - self._mean) / self._std).transpose(0, 3, 1, 2))

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        x = self._tensor(crops)
        if self._fixed_batch:
            return np.concatenate([self.session.run(None, {self._input: x[i : i + 1]})[0] for i in range(len(x))])
        return self.session.run(None, {self._input: x})[0]


def load_embedder(spec: str | Path | ModelRef | None = None, **kwargs) -> Embedder:
    """An embedder for any model spec (``faceverify.models``): a checkpoint (``.pt``), an
    ``.onnx`` file, a model directory or card, a model's name, ``"dlib"``, or None for the shipped
    ``models/default``.

    ``kwargs`` go to the embedder (``flip``, ``batch_size``, ``fallback``, ``policy``, ``aligner``;
    dlib's ``detector``, ``points``, ...); ``device`` applies to checkpoints only (ONNX runs on
    onnxruntime's providers, dlib on its own). An option the model's embedder does not take is a
    ConfigError.
    """
    model = resolve_model(spec)
    if model.kind == "dlib":
        from .dlib_embedder import DlibEmbedder  # raises a ConfigError naming the install when dlib is absent

        return DlibEmbedder(**kwargs)
    if model.kind == "onnx":
        kwargs.pop("device", None)
        _check_options(OnnxEmbedder, kwargs, model)
        card = model.card_input
        name = f"onnx:{model.path.name}" if card else None  # a named card: the same name on every machine
        return OnnxEmbedder(model.weights, card_input=card, name=name, **kwargs)
    _check_options(TorchEmbedder, kwargs, model)
    return TorchEmbedder(model.path, **kwargs)


def _check_options(cls: type, kwargs: dict, model: ModelRef) -> None:
    unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
    if unknown:
        raise ConfigError(f"model {display_path(model.path)} ({model.kind}) takes no option {', '.join(unknown)} "
                          "(options of another kind of model, e.g. dlib's detector?).")
