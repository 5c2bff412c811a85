#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets: form, signature, envelope, candidate, normalize) for
# SECONDS_EACH (default 600) with cargo-fuzz and libFuzzer, on stable Rust: `-s none` (no
# sanitizer: AddressSanitizer needs nightly, and safe Rust gains little from it; libFuzzer's
# coverage instrumentation is stable). Installs cargo-fuzz when missing. Each target's corpus
# grows in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>, checked in); a crash or hang is
# written to fuzz/artifacts/<target>/ and ends that target's run. Prints one line per target:
# executions per second, coverage (libFuzzer's `cov`: edges reached, `ft`: features), corpus
# size, and whether it found anything.
#
#   scripts/fuzz.sh [TARGET...]      SECONDS_EACH=600, JOBS=1
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${SECONDS_EACH:-600}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(form signature envelope candidate normalize)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    set +e
    cargo fuzz run -s none --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    secs=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    last=$(grep -E '#[0-9]+' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' | tail -n 1 || true)
    if [ $rc -eq 0 ]; then found="nothing found"; else
        found="FOUND: $(grep -E '^==[0-9]+== ERROR|panicked at|deadly signal|timeout after' "$log" | head -n 1)"
        status=1
        cp "$log" "fuzz/artifacts/$t/last-run.log"
    fi
    printf '%-10s %9s execs, %6s exec/s, %s; %s\n' "$t" "$execs" "$secs" "$last" "$found"
    rm -f "$log"
done
exit $status
