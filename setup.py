"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

Two top-level packages: ``faceverify`` (the library) and ``faceverify_models``, which is the
checkout's ``models/`` folder under an importable name, so that an install carries the default
model and ``faceverify verify A B`` works from any folder, offline. Only what a model needs to run
is shipped (weights, model card, calibration); its training record and LFW report stay in the
checkout. This needs a ``package_dir`` mapping, which pyproject.toml cannot combine with package
discovery, hence this file."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["faceverify", "faceverify.*"]) + ["faceverify_models"],
    package_dir={"faceverify_models": "models"},
    package_data={"faceverify": ["static/*"], "faceverify_models": ["*/MODEL.json", "*/calibration.json", "*/model.pt", "*/model.onnx", "mtcnn/*.onnx", "mtcnn/*.json"]},
    include_package_data=False,
)
