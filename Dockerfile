# faceverify REST service: the base install (`pip install .`, no development extras) in a venv.
#   docker build -t faceverify:latest .
# BuildKit builds it (Docker >= 23 by default; `DOCKER_BUILDKIT=1` on 20.10). Options:
#   --build-arg PYTHON_IMAGE=...                another python:3.11 base (scripts/compose_smoke.sh uses a local stand-in)
#   --secret id=extra_ca,src=/path/ca-bundle    a CA pip must trust (a TLS-intercepting proxy's); never stored in the image
# Run: docker compose up (docker-compose.yml: model path, gallery, API key), or the SQLite form in docs/service.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# libgomp1: the OpenMP runtime of faiss/onnxruntime; libglib2.0-0: OpenCV's one system dependency
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/faceverify
COPY deploy/pip-install.sh /usr/local/bin/
COPY pyproject.toml setup.py README.md ./
# The dependencies first, as their own layer: a source change re-runs only the install below.
RUN --mount=type=secret,id=extra_ca \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip-install.sh -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY faceverify/ faceverify/
COPY models/ models/
# the base install: a wheel of this checkout (a regular install, not editable) and nothing else
RUN --mount=type=secret,id=extra_ca \
    pip-install.sh --no-deps . \
    && pip check \
    && rm -rf build

RUN useradd --system --create-home --uid 10001 faceverify \
    && mkdir -p /data/gallery /models \
    && chown -R faceverify /data
USER faceverify
WORKDIR /home/faceverify
VOLUME ["/data/gallery"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

# API keys: FACEVERIFY_API_KEY (comma-separated) or FACEVERIFY_API_KEY_FILE, from the environment.
ENTRYPOINT ["faceverify", "serve"]
CMD ["--model", "/models/default", "--gallery", "/data/gallery", "--host", "0.0.0.0", "--port", "8000"]
