"""docker-compose.yml, deploy/nginx.conf and Dockerfile, validated structurally (no Docker engine
and no compose plugin on this machine, so `docker compose config` cannot run here): PostgreSQL
(official image, named volume, health check), two service replicas on it, nginx balancing over
them, the model path, the secrets from the environment, health checks, and image install steps
identical to the README's set-up."""

from __future__ import annotations

import re
import shlex

from urllib.parse import urlsplit

import pytest
import yaml

from faceverify.paths import REPO_ROOT
from faceverify.gallery import is_postgres_url
from faceverify.service.cli import build_parser

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
README_SETUP = "bash scripts/setup.sh"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation."""
    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op == ":?" and not env.get(name):
            raise KeyError(f"{name}: {arg}")
        return env.get(name) or (arg if op == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, value)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def service(compose):
    assert set(compose["services"]) == {"postgres", "faceverify", "proxy"}
    return compose["services"]["faceverify"]


ENV = {"FACEVERIFY_API_KEY": "k", "FACEVERIFY_DB_PASSWORD": "pw"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_service_command_is_a_valid_serve_invocation(service):
    args = build_parser().parse_args(service["command"])  # the exact CLI the container runs
    assert args.host == "0.0.0.0" and args.port == 8000
    assert args.model == "/models/default"
    assert args.gallery is None  # the gallery comes from FACEVERIFY_GALLERY_URL (password not in argv)
    assert service["build"]["context"] == "." and (REPO_ROOT / service["build"]["dockerfile"]).is_file()


def test_at_least_two_replicas_share_the_postgres_gallery(compose, service):
    assert service["deploy"]["replicas"] >= 2
    assert "ports" not in service  # reached through the proxy only
    url = urlsplit(interpolate(service["environment"]["FACEVERIFY_GALLERY_URL"], ENV))
    pg = compose["services"]["postgres"]
    assert is_postgres_url(url.geturl()) and url.hostname == "postgres" and url.port == 5432
    assert url.username == pg["environment"]["POSTGRES_USER"] and url.path == "/" + pg["environment"]["POSTGRES_DB"]
    assert url.password == interpolate(pg["environment"]["POSTGRES_PASSWORD"], ENV) == "pw"
    with pytest.raises(KeyError, match="FACEVERIFY_DB_PASSWORD"):
        interpolate(pg["environment"]["POSTGRES_PASSWORD"], {})  # compose refuses to start without one
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_is_the_official_image_with_a_named_volume_and_healthcheck(compose):
    pg = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+[\w.-]*", pg["image"])  # the official image (Docker Hub library)
    (volume,) = pg["volumes"]
    assert volume["type"] == "volume" and volume["source"] in compose["volumes"]
    assert volume["target"] == "/var/lib/postgresql/data"
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"] and pg["healthcheck"]["retries"] >= 1


def test_model_is_mounted_read_only(service):
    volumes = {v["target"]: v for v in service["volumes"]}
    model = volumes["/models/default"]
    assert model["type"] == "bind" and model["read_only"] is True
    assert interpolate(model["source"], {}) == "./models/default"
    assert interpolate(model["source"], {"FACEVERIFY_MODEL": "/srv/m"}) == "/srv/m"


def test_api_key_comes_from_the_environment_and_is_required(service):
    env = service["environment"]
    with pytest.raises(KeyError, match="FACEVERIFY_API_KEY"):
        interpolate(env["FACEVERIFY_API_KEY"], {})  # compose refuses to start without a key
    assert interpolate(env["FACEVERIFY_API_KEY"], {"FACEVERIFY_API_KEY": "k"}) == "k"
    assert interpolate(env["FACEVERIFY_AUTH"], {}) in ("mutations", "all")


def nginx_blocks(text: str) -> dict:
    """The nginx config's directives, nested by block: {"http": [{"upstream faceverify": [...]}, ...]}."""
    tokens = re.findall(r"[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))
    def parse(i):
        out, words = [], []
        while i < len(tokens):
            t = tokens[i]
            if t == ";":
                out.append(" ".join(words)); words = []
            elif t == "{":
                body, i = parse(i + 1)
                out.append({" ".join(words): body}); words = []
            elif t == "}":
                return out, i
            else:
                words.append(t)
            i += 1
        return out, i
    return parse(0)[0]


def test_proxy_balances_verify_and_identify_over_the_replicas(compose, service):
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    (mount,) = proxy["volumes"]
    assert mount["read_only"] and mount["target"] == "/etc/nginx/nginx.conf"
    conf = nginx_blocks((REPO_ROOT / mount["source"]).read_text())
    http = next(b["http"] for b in conf if isinstance(b, dict) and "http" in b)
    upstream = next(b["upstream faceverify"] for b in http if isinstance(b, dict) and "upstream faceverify" in b)
    # the upstream is the replicated service on its container port: one upstream server per replica
    assert any(d.startswith(f"server faceverify:{build_parser().parse_args(service['command']).port}") for d in upstream)
    server = next(b["server"] for b in http if isinstance(b, dict) and "server" in b)
    listen = next(int(d.split()[1]) for d in server if isinstance(d, str) and d.startswith("listen"))
    (mapping,) = proxy["ports"]
    assert interpolate(mapping, {}) == f"127.0.0.1:8000:{listen}"  # published on loopback by default
    assert interpolate(mapping, {"FACEVERIFY_BIND": "0.0.0.0", "FACEVERIFY_PORT": "9000"}) == f"0.0.0.0:9000:{listen}"
    locations = {k: v for b in server if isinstance(b, dict) for k, v in b.items() if k.startswith("location")}
    for path in ("/verify", "/identify"):
        (loc,) = [v for k, v in locations.items() if re.fullmatch(k.split()[-1], path) or k.split()[-1] == path]
        assert "proxy_pass http://faceverify" in loc
    assert "proxy_pass http://faceverify" in locations["location /"]
    assert proxy["depends_on"]["faceverify"]["condition"] == "service_healthy"


def test_healthcheck_polls_health_on_the_served_port(service):
    hc = service["healthcheck"]
    assert hc["test"][0] == "CMD" and "http://127.0.0.1:8000/health" in " ".join(hc["test"])
    assert hc["start_period"] and hc["retries"] >= 1
    # the check is runnable Python (compiled here; no engine to run it)
    compile(hc["test"][hc["test"].index("-c") + 1], "<healthcheck>", "exec")


def test_dockerfile_installs_exactly_like_the_readme():
    instr = dockerfile_instructions()
    runs = [rest for word, rest in instr if word == "RUN"]
    installs = [r for r in runs if "pip" in r or "setup.sh" in r or "venv" in r]
    assert installs == [README_SETUP], installs  # the only Python install step is the README's
    assert README_SETUP in (REPO_ROOT / "README.md").read_text()
    assert (REPO_ROOT / "scripts" / "setup.sh").is_file()


def test_dockerfile_copies_what_setup_needs_and_runs_serve():
    instr = dockerfile_instructions()
    copies = [shlex.split(rest) for word, rest in instr if word == "COPY"]
    sources = [src for c in copies for src in c[:-1]]
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY {src}: missing in the repository"
    # setup.sh installs the project itself (pip -e .): every folder setup.py makes a package of must be copied
    for folder in ("faceverify/", "models/"):
        assert folder in sources
    assert {"pyproject.toml", "setup.py", "scripts/"} <= set(sources)
    setup_at = [i for i, (w, r) in enumerate(instr) if w == "RUN" and r == README_SETUP][0]
    last_copy = max(i for i, (w, _) in enumerate(instr) if w == "COPY")
    assert last_copy < setup_at  # the source is in place before the install
    entry = [rest for word, rest in instr if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in instr if word == "CMD"]
    assert yaml.safe_load(entry[-1]) == ["faceverify", "serve"]
    build_parser().parse_args(yaml.safe_load(cmd[-1]))
    assert "8000" in [rest for word, rest in instr if word == "EXPOSE"]
    assert any(w == "USER" and r != "root" for w, r in instr)  # does not run as root
    assert any(w == "HEALTHCHECK" and "/health" in r for w, r in instr)
