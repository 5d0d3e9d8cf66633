"""faceverify: face verification toolkit — MTCNN 5-point alignment, large-margin softmax
training, LFW/MegaFace evaluation and a FAISS gallery behind a FastAPI service."""

__version__ = "0.1.0"
