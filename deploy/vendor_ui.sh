#!/usr/bin/env bash
# Copies the web UI's browser libraries (htmx, highlight.js) from their npm packages, pinned by
# api/ui/assets/package-lock.json, into api/ui/static/vendor (gitignored). Nothing is loaded
# from a CDN at run time. Idempotent: skipped when the lock file has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

assets=api/ui/assets
vendor=api/ui/static/vendor
stamp="$vendor/.lock-sha256"
want=$(sha256sum "$assets/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup: vendoring the web UI's libraries from npm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$assets/package.json" "$assets/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
modules="$work/node_modules"
rm -rf "$vendor"
mkdir -p "$vendor"
cp "$modules/htmx.org/dist/htmx.min.js" "$vendor/htmx.min.js"
cp "$modules/@highlightjs/cdn-assets/highlight.min.js" "$vendor/highlight.min.js"
cp "$modules/@highlightjs/cdn-assets/styles/github.min.css" "$vendor/highlight-github.min.css"
for license in htmx.org @highlightjs/cdn-assets; do
  cp "$modules/$license/LICENSE" "$vendor/LICENSE-$(basename "$license")"
done
echo "$want" >"$stamp"
