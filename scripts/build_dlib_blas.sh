#!/usr/bin/env bash
# dlib with BLAS (OpenBLAS) and AVX, built from PyPI's source release into the project's .venv.
# The `dlib-bin` wheel of the [dlib] extra has no BLAS: its face descriptor takes ~60 ms a face on
# this CPU, this build ~10 ms — what makes teacher targets for ~300k views take 25 min, not 2.5 h.
# Needs Debian's libopenblas-dev and cmake (installed here when run as root); ~15 min on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
version="${DLIB_VERSION:-20.0.1}"
if "$py" -c 'import dlib, sys; sys.exit(0 if dlib.DLIB_USE_BLAS else 1)' 2>/dev/null; then
  echo "dlib with BLAS is already installed"; exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev liblapack-dev cmake >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# the source release only: --no-build-isolation keeps pip from building cmake itself from source
"$py" -m pip download --quiet --no-deps --no-binary dlib --no-build-isolation "dlib==$version" -d "$work"
tar -xzf "$work"/dlib-"$version".tar.gz -C "$work"
# CUDA is found on some machines; without cuDNN dlib's CMake turns it off and builds for the CPU
(cd "$work/dlib-$version" && CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$py" setup.py -q bdist_wheel)
"$py" -m pip uninstall -y -q dlib-bin >/dev/null 2>&1 || true
"$py" -m pip install --quiet --no-deps "$work/dlib-$version"/dist/dlib-*.whl
"$py" -c 'import dlib; print("dlib", dlib.__version__, "BLAS", dlib.DLIB_USE_BLAS, "CUDA", dlib.DLIB_USE_CUDA)'
