#!/usr/bin/env bash
# Local stand-ins for the registry images docker-compose.yml uses, for machines that reach a Debian
# mirror but no image registry. Idempotent: the base is made once (FORCE=1 makes it again), the
# stand-ins are docker builds (cached: seconds when nothing changed).
#   local/debian:bookworm            debootstrap --variant=minbase bookworm (needs root), docker import
#   local/python:3.11-slim-bookworm  for python:3.11-slim-bookworm (the Dockerfile's base)
#   local/postgres:15-bookworm       for postgres:16-bookworm (Debian's PostgreSQL 15, same env contract)
#   local/nginx:1.22-bookworm        for nginx:1.27-alpine (Debian's nginx, conf.d layout)
# DEBIAN_MIRROR overrides the mirror (default: the one apt uses on this machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
docker=${DOCKER:-docker}
# shellcheck source=buildkit.sh
. "$here/buildkit.sh"

have() { [ "${FORCE:-0}" != 1 ] && $docker image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
  [ -n "${DEBIAN_MIRROR:-}" ] && { echo "$DEBIAN_MIRROR"; return; }
  local uri
  # deb822 sources first (Debian 12's default), then one-line sources
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u && $0 ~ /bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -z "$uri" ] && uri=$(awk '$1 == "deb" && $0 ~ / bookworm / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! have local/debian:bookworm; then
  command -v debootstrap >/dev/null || { echo "build_images: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "build_images: debootstrap needs root to build local/debian:bookworm" >&2; exit 1; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mirror=$(debian_mirror)
  echo "build_images: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | $docker import - local/debian:bookworm >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

for pair in python:3.11-slim-bookworm postgres:15-bookworm nginx:1.22-bookworm; do
  buildkit_build -q -t "local/$pair" "$here/${pair%%:*}" >/dev/null
done
echo "build_images: local/debian:bookworm local/python:3.11-slim-bookworm local/postgres:15-bookworm local/nginx:1.22-bookworm"
