#!/usr/bin/env bash
# The long crash-consistency run (issue 15, section 3): tests/crash.rs with 100 cycles of
# `kill -9` at random moments during concurrent uploads (PUT over h1/h2/h3, tus, IETF, HFS
# chunks, multipart POST) and restarts of the real binary, then the report table.
#
#   bash interop/crash/run.sh                 # 100 cycles, a fresh random seed
#   CYCLES=20 SEED=1234 bash interop/crash/run.sh   # replay a seed, fewer cycles
#
# Exit status: 0 when every invariant held (violations 0), else 1. See README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
CYCLES=${CYCLES:-100}
log=$(mktemp /tmp/xferd-crash.XXXXXX.log)
trap 'rm -f "$log"' EXIT
env_seed=()
[ -n "${SEED:-}" ] && env_seed=(XFERD_CRASH_SEED="$SEED")
status=0
env XFERD_CRASH_CYCLES="$CYCLES" "${env_seed[@]}" \
    cargo test --locked --test crash kill_9_cycles -- --nocapture >"$log" 2>&1 || status=$?
grep -E '^(crash|VIOLATION)' "$log" || true
line=$(grep '^crash report:' "$log" || true)
if [ -z "$line" ]; then
    tail -n 40 "$log"
    echo "crash: no report (cargo test exited $status)"
    exit 1
fi
field() { sed -E "s/.*\| $1 ([^|]*) \|.*/\1/" <<<"$line | "; }
printf '\n%-28s %s\n' "commit" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-28s %s\n' "seed" "$(sed -E 's/crash report: seed ([0-9]+).*/\1/' <<<"$line")"
for f in cycles "acknowledged uploads" "requests cut by kills" "sessions left" "uploads verified" "bytes verified" violations; do
    printf '%-28s %s\n' "$f" "$(field "$f")"
done
[ "$status" -eq 0 ] && [ "$(field violations | tr -d ' ')" = "0" ]
