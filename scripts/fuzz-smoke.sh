#!/usr/bin/env bash
# Fuzz smoke run: every cargo-fuzz target in fuzz/ for a short while, first on
# every file of its committed corpus (seeds and the regression inputs of the
# crashes found so far), then on new inputs. Exits non-zero if any target
# crashes (a panic, a failed invariant, an ASan report, a timeout or an
# out-of-memory); the input is left under fuzz/artifacts/<target>/.
#
# Installs cargo-fuzz if it is missing. cargo-fuzz needs nightly flags; this
# runs them on the stable toolchain through RUSTC_BOOTSTRAP=1.
#
#   FUZZ_SECONDS    seconds of fuzzing per target (default 20)
#   FUZZ_SANITIZER  address (default) or none
#
# See docs/FUZZING.md for the targets, their invariants and longer runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

secs="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "==> building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

# New inputs go to a scratch corpus; the committed corpus stays as it is.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $(cargo fuzz list); do
    echo "==> $target: $(find "fuzz/corpus/$target" -type f | wc -l) corpus files, then ${secs}s of fuzzing"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
        echo "ok   $target"
    else
        tail -40 "$log"
        echo "FAIL $target: see fuzz/artifacts/$target/"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke run failed: ${failed[*]}"
    exit 1
fi
echo "==> all fuzz targets passed"
