"""faceverify: face verification toolkit — MTCNN 5-point alignment, large-margin softmax
training and distillation, LFW/MegaFace evaluation and a FAISS gallery behind a FastAPI service.

    from faceverify import Verifier
    verifier = Verifier.from_model()          # the shipped default model (models/default)
    verifier.verify("a.jpg", "b.jpg")         # paths, bytes or RGB arrays -> verdict dict
    verifier.embed("a.jpg").vector            # one photo -> its unit-length embedding

Unusable input raises a ``FaceverifyError`` (``.code``: ``no_face``, ``unreadable_image``, ...).
"""

from .errors import FaceverifyError

__version__ = "0.1.0"
__all__ = ["FaceverifyError", "Verifier", "load_embedder"]


def __getattr__(name: str):
    # imported on first use: `import faceverify` stays cheap (no torch) for tools that only need paths
    if name == "Verifier":
        from .verify import Verifier

        return Verifier
    if name == "load_embedder":
        from .loaders import load_embedder

        return load_embedder
    raise AttributeError(f"module 'faceverify' has no attribute {name!r}")
