"""Which runtime runs a model: onnxruntime (the base install) or torch (the ``[train]`` extra).

A model directory may hold both ``model.pt`` and its export ``model.onnx`` (``faceverify export``).
The ``auto`` runtime serves the ONNX file on the CPU while it is the export of that very checkpoint
(its ``faceverify.source_sha256`` metadata matches), so both runtimes give the same verdicts
(tests/test_mtcnn_onnx.py) and the gallery fingerprint (the checkpoint's sha256) stays the same.
"""

from __future__ import annotations

import importlib.util
import logging

from .errors import ConfigError
from .models import ONNX_FILE, ModelRef

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "torch")
TRAIN_EXTRA = "pip install 'faceverify[train]'"


def have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def require_torch(feature: str) -> None:
    """A ConfigError naming the extra to install when ``feature`` needs torch and it is absent."""
    if not have_torch():
        raise ConfigError(f"{feature} needs torch, which this install does not have: {TRAIN_EXTRA}.")


def session_options(threads: int | None = 1):
    """onnxruntime options for the latency paths: ``threads`` intra-op threads (None: onnxruntime's
    default, one per core), sequential execution (a face's networks are a chain of small operators,
    nothing to run side by side), and workers that sleep instead of spinning while they wait, so a
    shared CPU keeps the latency steady (the onnxruntime counterpart of OMP_WAIT_POLICY=PASSIVE,
    faceverify/threads.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # third-party graphs warn about initialisers listed as inputs; harmless
    return options


def onnx_source_sha256(path) -> str | None:
    """The checkpoint sha256 an exported ONNX file records (None for other ONNX files)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map.get("faceverify.source_sha256")


def runtime_model(ref: ModelRef, runtime: str = "auto", device: str = "cpu") -> ModelRef:
    """The model file to run for ``ref``: its directory's ``model.onnx`` in place of ``model.pt``
    (runtime ``onnx``, or ``auto`` on the CPU when the export is current), else ``ref`` itself.
    Raises ConfigError when the runtime asked for cannot run this model here."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}.")
    if ref.kind == "dlib":
        return ref
    if ref.kind == "onnx":
        if runtime == "torch":
            raise ConfigError(f"{ref} is an ONNX model; the torch runtime needs a checkpoint (.pt).")
        return ref
    twin = ref.path / ONNX_FILE if ref.path.is_dir() else None
    if runtime != "torch" and twin is not None and twin.is_file() and (runtime == "onnx" or str(device) == "cpu"):
        if onnx_source_sha256(twin) == ref.sha256():
            return ModelRef("onnx", twin, ref.directory)
        if runtime == "onnx":
            raise ConfigError(f"{twin} is not the export of {ref.weights.name} (it was exported from another checkpoint); "
                              f"export it again: faceverify export {ref.path} {twin}")
        log.warning("%s is not the export of %s (stale): running the checkpoint on torch; re-export with `faceverify export`",
                    twin, ref.weights.name)
    elif runtime == "onnx":
        raise ConfigError(f"{ref} has no ONNX export ({ONNX_FILE} beside it); create it with "
                          f"`faceverify export {ref.path} {ref.directory / ONNX_FILE}`.")
    require_torch(f"the model {ref} (a torch checkpoint without a current ONNX export)")
    return ref
