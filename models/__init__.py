"""The shipped models, installed as the package ``faceverify_models`` (setup.py): one folder per
model (``default``, ``dlib``, the teachers by name), each with its model card ``MODEL.json``.
``faceverify.paths.MODELS_DIR`` finds this folder in a checkout and in an install alike."""
