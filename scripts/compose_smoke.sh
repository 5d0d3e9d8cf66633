#!/usr/bin/env bash
# docker-compose.yml brought up for real, on local images (no registry needed), and checked:
#   1. images: the stand-ins for postgres/nginx/python (deploy/local/build_images.sh) and the
#      service image from the Dockerfile (the base install), all cached by Docker when unchanged;
#   2. docker-compose up with deploy/compose.local.yml: postgres, 2 faceverify replicas, nginx;
#   3. scripts/compose_smoke.py through nginx: enrol, identify, verify, delete, every replica
#      following; a replica docker-killed under load loses no acknowledged enrolment;
#   4. no container's log holds the API key (sent once, wrongly, as ?api_key=);
#   5. docker-compose down -v; then the figures: build times, image sizes, start-up, round trips.
#
#   bash scripts/compose_smoke.sh          (root or the docker group; tests/test_compose_smoke.py runs it)
# Environment: FACEVERIFY_EXTRA_CA  a CA bundle pip must trust inside the build (default: $PIP_CERT,
#                                   else $SSL_CERT_FILE, when set: a TLS-intercepting proxy's CA)
#              FIGURES              also write the figures here (JSON)
#              PYTHON               the interpreter of the client (default python3; standard library only)
# Exit status: 0 passed, 1 a check failed, 2 no Docker engine or docker-compose here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
project=faceverify-smoke
compose_files=(-f docker-compose.yml -f deploy/compose.local.yml)
PY=${PYTHON:-python3}

if ! docker info >/dev/null 2>&1; then
  echo "compose_smoke: no Docker engine answers (docker info failed); scripts/setup.sh --test installs and starts one" >&2
  exit 2
fi
if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  echo "compose_smoke: neither docker-compose nor the docker compose plugin is installed" >&2
  exit 2
fi
dc() { "${compose[@]}" -p "$project" "${compose_files[@]}" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck source=../deploy/local/buildkit.sh
. deploy/local/buildkit.sh

t0=$(now)
bash deploy/local/build_images.sh >/dev/null
standins_s=$(since "$t0")

ca=${FACEVERIFY_EXTRA_CA:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
secret=()
[ -n "$ca" ] && [ -s "$ca" ] && secret=(--secret "id=extra_ca,src=$ca")
t0=$(now)
buildlog=$(mktemp)
if ! buildkit_build --progress=plain --build-arg PYTHON_IMAGE=local/python:3.11-slim-bookworm "${secret[@]}" \
     -t faceverify:latest . >"$buildlog" 2>&1; then
  tail -40 "$buildlog" >&2
  echo "compose_smoke: FAILED: the service image did not build (log above)" >&2
  rm -f "$buildlog"
  exit 1
fi
rm -f "$buildlog"
image_s=$(since "$t0")

mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%d", $1 / 1e6 }'; }
size_service=$(mb faceverify:latest)
size_postgres=$(mb local/postgres:15-bookworm)
size_nginx=$(mb local/nginx:1.22-bookworm)
size_python=$(mb local/python:3.11-slim-bookworm)

FACEVERIFY_API_KEY=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
FACEVERIFY_DB_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
FACEVERIFY_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FACEVERIFY_BIND=127.0.0.1
export FACEVERIFY_API_KEY FACEVERIFY_DB_PASSWORD FACEVERIFY_PORT FACEVERIFY_BIND

logs=$(mktemp)
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    dc logs --no-color --tail 30 >&2 2>/dev/null || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -f "$logs"
  exit "$status"
}
trap cleanup EXIT
dc down -v --remove-orphans >/dev/null 2>&1 || true  # what an interrupted earlier run left

t0=$(now)
dc up -d --no-build >/dev/null 2>&1 || { echo "compose_smoke: FAILED: docker-compose up" >&2; exit 1; }
up_s=$(since "$t0")
mapfile -t replicas < <(dc ps -q faceverify)
[ "${#replicas[@]}" -ge 2 ] || { echo "compose_smoke: FAILED: ${#replicas[@]} faceverify replicas running, want 2" >&2; exit 1; }

figures=$(mktemp)
t0=$(now)
PYTHONPATH=$root "$PY" scripts/compose_smoke.py --url "http://127.0.0.1:$FACEVERIFY_PORT" --key "$FACEVERIFY_API_KEY" \
  --replicas "$(IFS=,; echo "${replicas[*]}")" --figures "$figures" || { rm -f "$figures"; exit 1; }
checks_s=$(since "$t0")

dc logs --no-color >"$logs" 2>&1
if grep -qF "$FACEVERIFY_API_KEY" "$logs"; then
  grep -F "$FACEVERIFY_API_KEY" "$logs" | sed "s/$FACEVERIFY_API_KEY/<KEY>/g" | head -5 >&2
  echo "compose_smoke: FAILED: the API key is in the containers' logs (lines above, key masked)" >&2
  exit 1
fi
grep -q 'POST /collections?api_key=\[redacted\]' "$logs" \
  || { echo "compose_smoke: FAILED: the service's access log does not show the refused request, redacted" >&2; exit 1; }

t0=$(now)
dc down -v --remove-orphans >/dev/null 2>&1
down_s=$(since "$t0")
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"; docker volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || { echo "compose_smoke: FAILED: down -v left containers or volumes: $left" >&2; exit 1; }

"$PY" - "$figures" <<EOF
import json, sys
f = json.load(open(sys.argv[1]))
f.update(build_standins_s=$standins_s, build_service_image_s=$image_s, up_s=$up_s, checks_s=$checks_s, down_s=$down_s,
         image_mb={"faceverify:latest": $size_service, "local/postgres:15-bookworm": $size_postgres,
                   "local/nginx:1.22-bookworm": $size_nginx, "local/python:3.11-slim-bookworm": $size_python})
json.dump(f, open(sys.argv[1], "w"), indent=1)
rt = f["round_trip_ms_p50"]
print(f"""compose_smoke: passed
  build: stand-in images {f['build_standins_s']} s, service image {f['build_service_image_s']} s
  image sizes (MB): faceverify {f['image_mb']['faceverify:latest']}, postgres stand-in {f['image_mb']['local/postgres:15-bookworm']}, nginx stand-in {f['image_mb']['local/nginx:1.22-bookworm']}, python stand-in {f['image_mb']['local/python:3.11-slim-bookworm']}
  docker-compose up -d (postgres, then replicas, then proxy, each healthy) {f['up_s']} s; proxy /health 200 {f['proxy_ready_s']} s after
  round trips through nginx, p50 of 10: verify {rt['verify']} ms, identify {rt['identify']} ms, enrol {rt['enrol']} ms
  replicas followed each change within {f['replica_follow_ms_max']} ms
  kill under load: {f['kill_under_load']['acknowledged']} acknowledged enrolments, {f['kill_under_load']['lost']} lost; killed replica healthy {f['replica_restart_s']} s after docker start
  checks {f['checks_s']} s, down -v {f['down_s']} s; load average {f['load_average_at_start']} when the checks began""")
EOF
if [ -n "${FIGURES:-}" ]; then cp "$figures" "$FIGURES"; fi
rm -f "$figures"
