#!/usr/bin/env bash
# Fuzzing smoke test (run by .ci/run): builds every fuzz target with libFuzzer's coverage
# instrumentation and debug assertions (the flags `cargo fuzz build --sanitizer none` uses on
# stable Rust, less `-Ccodegen-units=1`, which makes a cold build several times slower) and
# runs each for a fixed number of executions, starting from its
# corpus in fuzz/corpus/TARGET (never modified: new inputs go to a temporary directory).
# A crash, a panic, a timeout (-timeout, seconds) or a memory blow-up (-rss_limit_mb) fails
# the step and leaves the input in fuzz/artifacts/TARGET/.
#
#   fuzz/smoke.sh [RUNS]          # default 100000 executions per target (reassembly: RUNS/5)
#
# cargo-fuzz is not needed; with it, `cargo fuzz run --sanitizer none TARGET` fuzzes one
# target for as long as you like.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-100000}
host=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cdebug-assertions"
echo "fuzz: building the targets (release, $host)"
RUSTFLAGS="$flags" cargo build --release --config 'profile.release.debug="line-tables-only"' --target "$host" --bins
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^microboxes-fuzz$')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
  mkdir -p "$scratch/$t" "artifacts/$t" "corpus/$t"
  start=$(date +%s)
  n=$runs
  # The reassembly target compares a shadow copy of both streams after every operation:
  # about 100 times slower per input than the others, so it gets a fifth of the count.
  [ "$t" = reassembly ] && n=$(( runs / 5 ))
  if ! "target/$host/release/$t" "$scratch/$t" "corpus/$t" -runs="$n" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" >"$scratch/$t.log" 2>&1; then
    tail -n 40 "$scratch/$t.log" >&2
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ (replay: target/$host/release/$t FILE)" >&2
    exit 1
  fi
  echo "fuzz: $t: $n executions, ok ($(( $(date +%s) - start )) s)"
done
