#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each) and prints libFuzzer's summary:
#   frontend/fuzz decode    - the MQTT decoder, 3.1.1 and 5.0 (frontend/fuzz/fuzz_targets/decode.rs)
#   log/fuzz recovery       - opening a damaged partition (log/fuzz/fuzz_targets/recovery.rs)
# Usage: bash benches/fuzz.sh [SECONDS]. A crash leaves its input under <fuzz dir>/artifacts/
# and makes the script exit non-zero; turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes -Z flags (sanitizer, coverage), which only nightly rustc accepts. Machines
# here have the stable toolchain alone and cannot fetch another; RUSTC_BOOTSTRAP lets stable
# take those flags. Only for this script: the project itself never needs it.
export RUSTC_BOOTSTRAP=1
for target in "frontend/fuzz decode" "log/fuzz recovery"; do
    read -r dir name <<<"$target"
    echo "== $name ($dir), ${seconds}s"
    cargo fuzz run "$name" --fuzz-dir "$dir" -- -max_total_time="$seconds" 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY|.*panicked)' || true
    # The pipeline hides cargo-fuzz's status; a crash leaves an artifact.
    if compgen -G "$dir/artifacts/$name/*" >/dev/null; then
        echo "$name: crash inputs in $dir/artifacts/$name/" >&2
        exit 1
    fi
done
