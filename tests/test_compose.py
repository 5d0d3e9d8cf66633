"""docker-compose.yml and Dockerfile, validated structurally (no Docker engine on this machine):
the service, a named gallery volume, the model path, the API key from the environment, a
healthcheck on /health, and image install steps identical to the README's set-up."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from faceverify.paths import REPO_ROOT
from serve.__main__ import build_parser

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
    assert list(compose["services"]) == ["faceverify"]
    return compose["services"]["faceverify"]


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
    assert args.model == "/models/default" and args.gallery == "/data/gallery"
    assert service["build"]["context"] == "." and (REPO_ROOT / service["build"]["dockerfile"]).is_file()


def test_gallery_is_a_named_volume_and_model_is_mounted_read_only(compose, service):
    volumes = {v["target"]: v for v in service["volumes"]}
    gallery = volumes["/data/gallery"]
    assert gallery["type"] == "volume" and gallery["source"] in compose["volumes"]
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


def test_port_published_on_loopback_by_default(service):
    (mapping,) = service["ports"]
    assert interpolate(mapping, {}) == "127.0.0.1:8000:8000"
    assert interpolate(mapping, {"FACEVERIFY_BIND": "0.0.0.0", "FACEVERIFY_PORT": "9000"}) == "0.0.0.0:9000:8000"


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
    # setup.sh installs the project itself (pip -e .): every package in pyproject's find list must be copied
    for package in ("faceverify", "data_prep", "train", "eval", "serve", "bench"):
        assert f"{package}/" in sources
    assert "pyproject.toml" in sources and "scripts/" in sources
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
