#!/bin/sh
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time; exits non-zero on a finding.
# Usage: scripts/fuzz.sh [SECONDS]          thorough: release build with AddressSanitizer
#        scripts/fuzz.sh --smoke [SECONDS]  quick: debug build, no sanitizer (part of make test)
set -eu
cd "$(dirname "$0")/.."

mode=full
if [ "${1:-}" = "--smoke" ]; then mode=smoke; shift; fi
seconds="${1:-60}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# libFuzzer's instrumentation needs compiler flags that stable Rust keeps behind the nightly
# gate; this machine has only the stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if [ "$mode" = smoke ]; then set -- --dev -s none; else set --; fi

cd fuzz
mkdir -p logs
for target in $(cargo fuzz list); do
    echo "fuzzing $target for ${seconds}s ($mode)" >&2
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    if cargo fuzz run "$@" "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units)' "$log" >&2 || true
    else
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/, the log in fuzz/$log" >&2
        exit 1
    fi
done
