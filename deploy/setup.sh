#!/usr/bin/env bash
# Installs everything qai needs on a fresh Debian/Ubuntu machine, idempotently:
# apt packages (bubblewrap), uv, the Python environment in .venv, and the
# local sandbox template (Next.js app built from the npm registry, cached by its inputs).
# chromium is the browser the web UI's Playwright tests drive (nothing downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(bubblewrap python3 iproute2 procps chromium docker-compose git)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

uv sync --frozen --quiet

bash deploy/vendor_ui.sh

if [ "${QAI_SANDBOX_BACKEND:-local}" = "local" ]; then
  # exec: a signal to `make` (which forwards SIGTERM to this script) reaches the build itself,
  # which then stops npm and the dev server instead of leaving them running.
  exec .venv/bin/python -m sandboxes.template build
fi
