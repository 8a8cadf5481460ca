#!/bin/bash
# E2B start command: run the dev server and request the first page until it compiles, so the
# snapshot E2B takes holds a dev server whose first page is already compiled.
set -u

wait_for_page() {
    local deadline=$((SECONDS + 300))
    local code
    while (( SECONDS < deadline )); do
        code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 120 "http://localhost:3000/" || true)
        if [[ "$code" == "200" ]]; then
            echo "compile_page: / compiled"
            return 0
        fi
        sleep 0.2
    done
    echo "compile_page: / did not compile within 300 s (last status ${code:-none})" >&2
    return 1
}

wait_for_page &

cd /home/user
exec env NEXT_TELEMETRY_DISABLED=1 NEXT_IGNORE_INCORRECT_LOCKFILE=1 \
    npx next dev --turbopack --port 3000 --hostname 0.0.0.0
