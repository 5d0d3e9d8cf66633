"""The client side of scripts/compose_smoke.sh: drives a running docker-compose deployment
(postgres, 2 faceverify replicas, nginx) and fails loudly when it misbehaves.

    python scripts/compose_smoke.py --url http://127.0.0.1:PORT --key KEY --replicas ID1,ID2 [--figures out.json]

Through nginx: create a collection, enrol, identify, verify (same and different person), delete;
after each gallery change every replica (asked directly at its container address) must follow.
Then 3 clients enrol through nginx while one replica is `docker kill`ed: every acknowledged (201)
enrolment must be in the database and searchable on the survivor, and on the killed replica once
it is started again. Standard library only (any python3 with the checkout on sys.path): the host
needs nothing of the service's dependencies to check it.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from faceverify.paths import lfw_root

# the Makefile's demo pair and a different person; the load cycles over more people
SAME = ("Colin_Powell", 1), ("Colin_Powell", 2)
OTHER = ("Serena_Williams", 1)
LOAD_PEOPLE = ["George_W_Bush", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
               "Hugo_Chavez", "Jacques_Chirac", "Jean_Chretien", "John_Ashcroft", "Junichiro_Koizumi"]
COLLECTION = "smoke"


class Failed(AssertionError):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


def photo(name: str, n: int) -> str:
    return base64.b64encode((lfw_root() / "images" / name / f"{name}_{n:04d}.jpg").read_bytes()).decode()


def call(base: str, method: str, path: str, body: dict | None = None, key: str | None = None,
         timeout: float = 60) -> tuple[int, dict, float]:
    """(status, JSON body, seconds). Connection errors are status 0: the caller decides."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("X-API-Key", key)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return 0, {"error": str(e)}, time.perf_counter() - t0
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"raw": raw[:200].decode(errors="replace")}
    return status, payload, time.perf_counter() - t0


def wait_for(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - t0
        except Failed:
            pass
        if time.monotonic() - t0 > timeout:
            raise Failed(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


def replica_url(container: str) -> str:
    # the replicas publish no port: the host reaches them at their address on the compose network
    out = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container],
                         check=True, capture_output=True, text=True).stdout.split()
    check(bool(out), f"replica {container} has no network address (not running?)")
    return f"http://{out[0]}:8000"


def face_ids_found(base: str, image: str) -> set[str]:
    """Every face id /identify returns for ``image`` (k=100: all subjects enrolled with it)."""
    status, body, _ = call(base, "POST", "/identify", {"collection": COLLECTION, "image": image, "k": 100})
    check(status == 200, f"identify on {base}: {status} {body}")
    return {m["face_id"] for m in body["matches"]}


def top_face(base: str, embedding: list[float]) -> str | None:
    status, body, _ = call(base, "POST", "/identify", {"collection": COLLECTION, "embedding": embedding, "k": 1})
    check(status == 200, f"identify on {base}: {status} {body}")
    return body["matches"][0]["face_id"] if body["matches"] else None


def p50_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


def api_round_trip(proxy: str, key: str, replicas: list[str], figures: dict) -> None:
    """Enrol, identify, verify, delete through nginx; every replica follows each change."""
    status, body, _ = call(proxy, "POST", "/collections", {"name": COLLECTION}, key)
    check(status == 201, f"create collection: {status} {body}")
    for url in replicas:  # a replica may not have applied the creation yet (milliseconds)
        wait_for(lambda u=url: call(u, "GET", f"/collections/{COLLECTION}")[0] == 200, 10, f"collection on {url}")
    (a, na), (b, nb) = SAME
    probe, query = photo(a, na), photo(b, nb)
    status, face, t_enrol = call(proxy, "POST", f"/collections/{COLLECTION}/subjects/colin/faces", {"image": probe}, key)
    check(status == 201, f"enrol: {status} {face}")
    status, body, _ = call(proxy, "POST", "/embed", {"image": query})
    check(status == 200, f"embed: {status} {body}")
    embedding = body["embedding"]
    follow = [wait_for(lambda u=url: top_face(u, embedding) == face["face_id"], 10, f"enrolment seen on {url}")
              for url in replicas]
    status, body, t_identify = call(proxy, "POST", "/identify", {"collection": COLLECTION, "image": query, "k": 3})
    check(status == 200 and body["matches"] and body["matches"][0]["subject"] == "colin",
          f"identify through nginx: {status} {body}")
    status, same, t_verify = call(proxy, "POST", "/verify", {"image1": probe, "image2": query})
    check(status == 200 and same["same_person"] is True, f"verify same person: {status} {same}")
    status, diff, _ = call(proxy, "POST", "/verify", {"image1": probe, "image2": photo(*OTHER)})
    check(status == 200 and diff["same_person"] is False, f"verify different people: {status} {diff}")
    # a key in the query string is refused (the header is the only way); compose_smoke.sh then checks
    # that the key is in no container's log
    status, body, _ = call(proxy, "POST", f"/collections?api_key={key}", {"name": "by_query"})
    check(status == 401, f"key in the query string: {status} {body}")
    status, body, _ = call(proxy, "DELETE", f"/collections/{COLLECTION}/subjects/colin", None, key)
    check(status == 200 and body["faces_removed"] == 1, f"delete subject: {status} {body}")
    follow += [wait_for(lambda u=url: top_face(u, embedding) is None, 10, f"deletion seen on {url}") for url in replicas]
    figures["replica_follow_ms_max"] = round(max(follow) * 1000, 1)
    # round trips through nginx, sequential (the first requests above included warm-up)
    rt = {"verify": [], "identify": [], "enrol": []}
    for i in range(10):
        rt["verify"].append(call(proxy, "POST", "/verify", {"image1": probe, "image2": query})[2])
        rt["identify"].append(call(proxy, "POST", "/identify", {"collection": COLLECTION, "image": query})[2])
        status, body, t = call(proxy, "POST", f"/collections/{COLLECTION}/subjects/rt{i}/faces", {"image": probe}, key)
        check(status == 201, f"enrol rt{i}: {status} {body}")
        rt["enrol"].append(t)
        call(proxy, "DELETE", f"/collections/{COLLECTION}/subjects/rt{i}", None, key)
    figures["round_trip_ms_p50"] = {name: p50_ms(ts) for name, ts in rt.items()}
    figures["first_request_ms"] = {"enrol": round(t_enrol * 1000, 1), "identify": round(t_identify * 1000, 1),
                                   "verify": round(t_verify * 1000, 1)}
    print(f"compose_smoke: enrol/identify/verify/delete through nginx ok; every replica followed each change "
          f"within {figures['replica_follow_ms_max']} ms; round trips p50 (ms) {figures['round_trip_ms_p50']}", flush=True)


def kill_under_load(proxy: str, key: str, containers: list[str], urls: list[str], figures: dict,
                    clients: int = 3, after_kill_s: float = 8.0) -> None:
    """Enrol through nginx from ``clients`` threads, docker kill one replica, keep enrolling:
    nothing acknowledged may be missing from the database or either replica's index."""
    images = {name: photo(name, 1) for name in LOAD_PEOPLE}
    acked: list[tuple[str, str]] = []  # (person, face id) of every 201
    statuses: dict[int, int] = {}
    lock, stop = threading.Lock(), threading.Event()

    def client(c: int) -> None:
        i = 0
        while not stop.is_set():
            person = LOAD_PEOPLE[(c + i * clients) % len(LOAD_PEOPLE)]
            # largest_central: a press photo may show a second face; enrolment's default refuses it (422)
            status, body, _ = call(proxy, "POST", f"/collections/{COLLECTION}/subjects/load{c}_{i}/faces",
                                   {"image": images[person], "policy": "largest_central"}, key, timeout=30)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    acked.append((person, body["face_id"]))
            i += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 10, 120, "10 enrolments before the kill")
    victim, survivor = containers[0], urls[1]
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    at_kill = len(acked)
    time.sleep(after_kill_s)
    stop.set()
    for t in threads:
        t.join(60)
    after_kill = len(acked) - at_kill
    print(f"compose_smoke: killed replica {victim[:12]} after {at_kill} acknowledged enrolments; "
          f"{after_kill} more acknowledged by the survivor in {after_kill_s:.0f} s; statuses {statuses}", flush=True)
    check(after_kill > 0, "no enrolment was acknowledged after the kill: the survivor did not take over")
    # 502: the request was in flight on the killed replica (not acknowledged, so the client may retry);
    # anything else but 201 is a fault
    check(set(statuses) <= {201, 502}, f"unexpected statuses under the kill: {statuses}")

    want = {fid for _, fid in acked}
    status, body, _ = call(proxy, "GET", f"/collections/{COLLECTION}/faces")
    check(status == 200, f"list faces: {status} {body}")
    stored = {f["face_id"] for f in body["faces"]}
    check(want <= stored, f"{len(want - stored)} acknowledged enrolments missing from the database")

    def searchable(url: str) -> set[str]:
        missing = set()
        for person in LOAD_PEOPLE:
            expected = {fid for p, fid in acked if p == person}
            if expected:
                missing |= expected - face_ids_found(url, images[person])
        return missing

    missing = searchable(survivor)
    check(not missing, f"{len(missing)} acknowledged enrolments not searchable on the surviving replica")
    # the killed replica is started again: it rebuilds its index from PostgreSQL and follows
    t0 = time.monotonic()
    subprocess.run(["docker", "start", victim], check=True, capture_output=True)
    restarted = replica_url(victim)
    wait_for(lambda: call(restarted, "GET", "/health", timeout=5)[0] == 200, 180, "the killed replica healthy again")
    figures["replica_restart_s"] = round(time.monotonic() - t0, 1)
    missing = searchable(restarted)
    check(not missing, f"{len(missing)} acknowledged enrolments not searchable on the restarted replica")
    figures["kill_under_load"] = {"acknowledged": len(acked), "acknowledged_after_kill": after_kill,
                                  "statuses": {str(k): v for k, v in sorted(statuses.items())}, "lost": 0}
    print(f"compose_smoke: all {len(acked)} acknowledged enrolments in the database, searchable on the survivor "
          f"and on the killed replica after its restart ({figures['replica_restart_s']} s to healthy)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the proxy's URL (nginx)")
    p.add_argument("--key", required=True, help="the deployment's API key")
    p.add_argument("--replicas", required=True, help="comma-separated container ids of the faceverify replicas")
    p.add_argument("--figures", default=None, help="write the measured figures here (JSON)")
    args = p.parse_args(argv)
    containers = args.replicas.split(",")
    if len(containers) < 2:
        p.error("--replicas: at least two containers (the deployment runs 2 replicas)")
    proxy = args.url.rstrip("/")
    figures: dict = {"load_average_at_start": open("/proc/loadavg").read().split()[0]}
    try:
        figures["proxy_ready_s"] = round(wait_for(lambda: call(proxy, "GET", "/health", timeout=5)[0] == 200, 180,
                                                  "the proxy's /health"), 1)
        urls = [replica_url(c) for c in containers]
        api_round_trip(proxy, args.key, urls, figures)
        kill_under_load(proxy, args.key, containers, urls, figures)
    except Failed as exc:
        print(f"compose_smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.figures:
            with open(args.figures, "w") as f:
                json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
