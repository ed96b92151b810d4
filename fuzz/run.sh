#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while against the kept corpus (CI: `fuzz/run.sh 30`).
#
#   fuzz/run.sh [seconds per target]     default 30
#
# - Stable Rust only: cargo-fuzz passes nightly flags (-Zsanitizer=address), which stable rustc
#   accepts under RUSTC_BOOTSTRAP=1.
# - Builds into target/fuzz (FUZZ_TARGET_DIR overrides), apart from the main target dir.
# - Inputs the short run finds go to a temporary directory: the kept corpus (corpus/<target>)
#   and the inputs of fixed bugs (regressions/<target>) are only read.
# - A crash, panic or hang (> 10 s for one input) fails the run; its input is copied to
#   fuzz/artifacts/<target>/ (git-ignored) and can be replayed with
#   `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>`.
# - Prints one `FIGURES fuzz target=<t> seconds=<s> execs=<n>` line per target.
set -euo pipefail

seconds=${1:-30}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [seconds per target]" >&2; exit 2; }
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$fuzz_dir")
target_dir=${FUZZ_TARGET_DIR:-$repo/target/fuzz}
targets=(signature_header cloud_webhook datacenter_webhook admin_bodies)
cargo_fuzz_version=0.13.2

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# cargo fuzz <subcommand> with this fuzz dir and target dir (before any `--` libFuzzer args).
fuzz() {
    local subcommand=$1
    shift
    cargo fuzz "$subcommand" --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" "$@"
}

started=$SECONDS
# One build for every target (the runs below then find it fresh).
fuzz build
echo "fuzz build: $((SECONDS - started)) s" >&2

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t/new" "$scratch/$t/artifacts" "$fuzz_dir/corpus/$t"
    log=$scratch/$t.log
    rc=0
    # The first corpus directory receives new inputs; the kept corpus and the inputs of bugs
    # found before (regressions/) are only read.
    inputs=("$fuzz_dir/corpus/$t")
    [[ -d $fuzz_dir/regressions/$t ]] && inputs+=("$fuzz_dir/regressions/$t")
    fuzz run "$t" "$scratch/$t/new" "${inputs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$fuzz_dir/dict/$t.dict" -artifact_prefix="$scratch/$t/artifacts/" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "FIGURES fuzz target=$t seconds=$seconds execs=${execs:-0}"
    if ((rc != 0)) || [[ -n $(ls -A "$scratch/$t/artifacts") ]]; then
        failed+=("$t")
        mkdir -p "$fuzz_dir/artifacts/$t"
        cp -r "$scratch/$t/artifacts/." "$fuzz_dir/artifacts/$t/" 2>/dev/null || true
        echo "fuzz target $t FAILED (exit $rc); inputs kept in fuzz/artifacts/$t/; log tail:" >&2
        tail -n 60 "$log" >&2
    else
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 >&2 || true
    fi
done

echo "fuzz total: $((SECONDS - started)) s" >&2
if ((${#failed[@]} > 0)); then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no crash in ${seconds} s each"
