#!/usr/bin/env bash
# Fuzzing step of .ci/run: builds every target with cargo-fuzz (nightly, libFuzzer) and runs
# each for FUZZ_SECS seconds (default 30; 10 targets, core_request included: `fuzz list`
# finds them all, about 5.5 minutes) from its corpus; every run starts by replaying its
# whole corpus, so a committed input that crashes fails here.
# (`cargo test` in fuzz/ replays the corpora on stable as well; CI skips that second build
# of the crate unless FUZZ_REPLAY_STABLE=1, to stay within its time budget.) New inputs go to a
# scratch directory, so the committed corpora only change by hand (`cargo fuzz cmin`);
# a crash leaves its input in fuzz/artifacts/<target>/ (not committed) and fails the step.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECS:-30}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

if [ "${FUZZ_REPLAY_STABLE:-0}" = 1 ]; then cargo test --locked; fi
# -a: debug assertions and overflow checks on; -s none: no sanitizer (the harnesses and the
# parsers are safe Rust; ASan would only slow them down).
cargo +nightly fuzz build -a -s none

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    if cargo +nightly fuzz run -a -s none "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -o 'number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')"
        echo "fuzz $t: ${runs:-?} executions in ${secs} s, no crash"
    else
        failed=1
        echo "fuzz $t: FAILED"
        # The assertion first: libFuzzer's crash report after it is long enough that a tail
        # alone can cut the message off.
        grep -m1 -A6 'panicked at' "$log" || true
        tail -40 "$log"
    fi
done
exit "$failed"
