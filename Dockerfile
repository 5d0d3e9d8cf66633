# faceverify REST service. The install step is the README's set-up, verbatim: `bash scripts/setup.sh`.
#   docker compose up            (see docker-compose.yml: model path, gallery volume, API key)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# libgomp1: OpenMP runtime used by faiss/torch; libglib2.0-0: OpenCV's one system dependency
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/faceverify
COPY pyproject.toml setup.py README.md ./
COPY scripts/ scripts/
COPY faceverify/ faceverify/
COPY models/ models/
RUN bash scripts/setup.sh

ENV PATH=/opt/faceverify/.venv/bin:$PATH
RUN useradd --system --create-home --uid 10001 faceverify \
    && mkdir -p /data/gallery /models \
    && chown -R faceverify /data
USER faceverify
VOLUME ["/data/gallery"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

# API keys: FACEVERIFY_API_KEY (comma-separated) or FACEVERIFY_API_KEY_FILE, from the environment.
ENTRYPOINT ["faceverify", "serve"]
CMD ["--model", "/models/default", "--gallery", "/data/gallery", "--host", "0.0.0.0", "--port", "8000"]
