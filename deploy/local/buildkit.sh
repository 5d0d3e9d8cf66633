# Sourced: `buildkit_build ARGS...` runs a BuildKit `docker build` (the Dockerfile's secret mounts
# need it) with whichever client can: `docker buildx build --load`, else a client with BuildKit
# built in (Docker 20.10's, DOCKER_BUILDKIT=1; Debian's docker.io installs one at /usr/bin/docker).
buildkit_build() {
  local docker=${DOCKER:-docker} c
  if $docker buildx version >/dev/null 2>&1; then
    $docker buildx build --load "$@"
    return
  fi
  for c in "$docker" /usr/bin/docker; do
    if command -v "$c" >/dev/null 2>&1 && DOCKER_BUILDKIT=1 "$c" build --help >/dev/null 2>&1; then
      DOCKER_BUILDKIT=1 "$c" build "$@"
      return
    fi
  done
  echo "buildkit_build: no docker client here builds with BuildKit (install docker buildx, or Debian's docker.io)" >&2
  return 1
}
