#!/usr/bin/env bash
# Runs every fuzz target briefly on the committed corpus (CI: a regression that makes a seed or
# a near mutation of it crash fails the job). 15 s per target by default (FUZZ_SECONDS).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# take the -Z sanitizer flags cargo-fuzz passes. New inputs and crash artifacts go to a temp
# folder (printed), never into the committed corpus.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-15}"
targets=(pth safetensors pickle train_config pipeline_config translate)
command -v cargo-fuzz >/dev/null || { echo "run_ci.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2; exit 2; }
work="$(mktemp -d)"
echo "fuzz work folder: $work"
cargo fuzz build -O --debug-assertions
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    echo "== $t: ${seconds}s on corpus/$t"
    # First folder: where new inputs go; second: the committed seeds, read only.
    if ! cargo fuzz run -O --debug-assertions "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/$t-" -print_final_stats=1 >"$work/$t.log" 2>&1; then
        tail -n 60 "$work/$t.log" >&2
        echo "run_ci.sh: target $t failed; log and artifacts in $work" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$work/$t.log" || true
done
rm -rf "$work"
echo "all fuzz targets ran clean"
