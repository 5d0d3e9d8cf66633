"""docker-compose.yml, deploy/nginx.conf, deploy/compose.local.yml and Dockerfile, checked as files
(in the fast tier; tests/test_compose_smoke.py brings them up for real where a Docker engine runs):
PostgreSQL (official image, named volume, health check, SIGINT), two service replicas on it, nginx
balancing over them with no query string in its log, the model path, the secrets from the
environment, health checks, the image built from the base install, and the local override
swapping images only."""

from __future__ import annotations

import re
import shlex

from urllib.parse import urlsplit

import pytest
import yaml

from faceverify.paths import REPO_ROOT
from faceverify.gallery import is_postgres_url
from faceverify.commands.serve import build_parser

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCAL_OVERRIDE = REPO_ROOT / "deploy" / "compose.local.yml"


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
    # fast shutdown: on SIGTERM PostgreSQL waits for the replicas' connections until it is killed
    assert pg["stop_signal"] == "SIGINT"


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
    # a site in the image's conf.d (inside its http block), as the official image is meant to be used
    assert mount["read_only"] and mount["target"] == "/etc/nginx/conf.d/default.conf"
    http = nginx_blocks((REPO_ROOT / mount["source"]).read_text())
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


def test_proxy_logs_no_query_string(compose):
    """A key wrongly sent as ?api_key=... must not reach the proxy's access log: its format has
    the path ($uri), never the request line or the arguments."""
    (mount,) = compose["services"]["proxy"]["volumes"]
    http = nginx_blocks((REPO_ROOT / mount["source"]).read_text())
    formats = {d.split()[1]: d for d in http if isinstance(d, str) and d.startswith("log_format ")}
    server = next(b["server"] for b in http if isinstance(b, dict) and "server" in b)
    (access_log,) = [d for d in server if isinstance(d, str) and d.startswith("access_log ")]
    used = formats[access_log.split()[2]]
    assert "$uri" in used
    for variable in ("$request ", "$request\"", "$request_uri", "$args", "$query_string", "$arg_"):
        assert variable not in used + " ", variable


def test_healthcheck_polls_health_on_the_served_port(service):
    hc = service["healthcheck"]
    assert hc["test"][0] == "CMD" and "http://127.0.0.1:8000/health" in " ".join(hc["test"])
    assert hc["start_period"] and hc["retries"] >= 1
    # the check is runnable Python (compiled here; no engine to run it)
    compile(hc["test"][hc["test"].index("-c") + 1], "<healthcheck>", "exec")


def test_dockerfile_is_the_base_install():
    """The service image installs the package's own dependencies and a wheel of the checkout: not
    scripts/setup.sh's development set, no extras, no editable install."""
    instr = dockerfile_instructions()
    runs = [rest for word, rest in instr if word == "RUN"]
    installs = [r for r in runs if "pip" in r or "setup.sh" in r]
    assert len(installs) == 2, installs
    deps, package = installs
    assert "['project']['dependencies']" in deps and "-r /tmp/requirements.txt" in deps
    assert "--no-deps ." in package and "pip check" in package
    pip_args = [re.search(r"pip-install\.sh ([^&]*)", r).group(1).split() for r in installs]
    assert pip_args == [["-r", "/tmp/requirements.txt"], ["--no-deps", "."]]  # no extras, not editable
    assert not any("setup.sh" in r for r in runs)
    # pip trusts an extra CA only through the build secret (never a file in a layer)
    assert all(r.startswith("--mount=type=secret,id=extra_ca ") for r in installs)
    assert "/run/secrets/extra_ca" in (REPO_ROOT / "deploy" / "pip-install.sh").read_text()
    (arg,) = [rest for word, rest in instr if word == "ARG"]
    assert arg == "PYTHON_IMAGE=python:3.11-slim-bookworm"  # the official image unless told otherwise
    assert [rest for word, rest in instr if word == "FROM"] == ["${PYTHON_IMAGE}"]


def test_dockerfile_copies_what_the_install_needs_and_runs_serve():
    instr = dockerfile_instructions()
    copies = [shlex.split(rest) for word, rest in instr if word == "COPY"]
    sources = [src for c in copies for src in c[:-1]]
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY {src}: missing in the repository"
    # the install builds the project: every folder setup.py makes a package of must be copied
    for folder in ("faceverify/", "models/"):
        assert folder in sources
    assert {"pyproject.toml", "setup.py", "README.md"} <= set(sources)  # README: the package's long description
    package_at = [i for i, (w, r) in enumerate(instr) if w == "RUN" and "--no-deps ." in r][0]
    last_copy = max(i for i, (w, _) in enumerate(instr) if w == "COPY")
    assert last_copy < package_at  # the source is in place before the install
    entry = [rest for word, rest in instr if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in instr if word == "CMD"]
    assert yaml.safe_load(entry[-1]) == ["faceverify", "serve"]
    build_parser().parse_args(yaml.safe_load(cmd[-1]))
    assert "8000" in [rest for word, rest in instr if word == "EXPOSE"]
    assert any(w == "USER" and r != "root" for w, r in instr)  # does not run as root
    assert any(w == "HEALTHCHECK" and "/health" in r for w, r in instr)


def test_local_override_swaps_images_only(compose):
    """deploy/compose.local.yml (no registry): the stand-in images of deploy/local, nothing else."""
    local = yaml.safe_load(LOCAL_OVERRIDE.read_text())
    assert set(local) == {"services"} and set(local["services"]) <= set(compose["services"])
    built = set()
    for name, svc in local["services"].items():
        if "image" in svc:
            assert set(svc) == {"image"} and svc["image"].startswith("local/"), (name, svc)
            repo, tag = svc["image"].removeprefix("local/").split(":")
            official = compose["services"][name]["image"].split(":")[0]
            assert repo == official, (name, svc)  # a stand-in for the same image
            built.add(repo)
        else:
            assert svc == {"build": {"args": {"PYTHON_IMAGE": "local/python:3.11-slim-bookworm"}}}, (name, svc)
            built.add("python")
    assert built == {"postgres", "nginx", "python"}
    script = (REPO_ROOT / "deploy" / "local" / "build_images.sh").read_text()
    for repo in built:
        assert (REPO_ROOT / "deploy" / "local" / repo / "Dockerfile").is_file()
        assert re.search(rf"\b{repo}:[\w.-]+", script), repo
