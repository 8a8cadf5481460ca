# One image for the qai worker (`python worker.py`, the default) and the API (`python -m api`).
# Node 20 and npm build the sandbox template; Debian's Python 3.11 runs qai; bubblewrap,
# iproute2 and procps are what local sandboxes need (they also need root and privileged mounts:
# see deploy/k8s/README.md). With QAI_SANDBOX_BACKEND=e2b none of that is used. Chromium runs
# the browser check of drafts (Playwright drives it; nothing downloads a browser).
FROM node:20-bookworm-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's packages follow the base image's point release; pinning them would break its rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv bubblewrap iproute2 procps ca-certificates git chromium \
    && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv

WORKDIR /app
ENV UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    QAI_DATA_DIR=/var/lib/qai \
    QAI_LOG_FORMAT=json \
    QAI_METRICS_HOST=0.0.0.0 \
    QAI_METRICS_PORT=9464

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/bin/python3

COPY . .
# The web UI's browser libraries (htmx, highlight.js) from npm, and the Next.js template the
# local sandboxes start from: both built into the image (npm registry), nothing at run time.
RUN bash deploy/vendor_ui.sh && python -m sandboxes.template build

EXPOSE 8000 8080 9464
CMD ["python", "worker.py"]
