#!/usr/bin/env bash
# Benchmarks `nemoconv consolidate` against `cp -r` of the same training checkpoint.
#
# Usage: scripts/bench_consolidate.sh [PRESET]      (default: nano-slice)
#
# The preset (of `examples/make-checkpoint.rs`) is generated once, as a NeMo Automodel
# training checkpoint saved on RANKS ranks, into $BENCH_DIR/PRESET-rRANKS/model. Then one
# warm-up round (not counted) and PAIRS rounds of `cp -r` and `nemoconv consolidate` (wall
# time and peak RSS of each; outputs removed and synced between runs, untimed), and a
# Markdown table on stdout. For cold-cache figures, drop the page cache before each timed
# run yourself (this script never does), and compare with `cp -r && sync`.
#
# Environment:
#   BENCH_DIR   where checkpoints and outputs live (default /work/bench-data; outside the repo)
#   RANKS       training ranks of the generated checkpoint (default 8)
#   PAIRS       timed rounds (default 3)
#   JOBS        passed to nemoconv as `-j JOBS` when set
#   NEMOCONV    the binary to time (default target/release/nemoconv)
#   SKIP_BUILD  set to 1 to use existing binaries instead of running cargo build
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/work/bench-data}
RANKS=${RANKS:-8}
PAIRS=${PAIRS:-3}
JOBS=${JOBS:-}
NEMOCONV=${NEMOCONV:-$ROOT/target/release/nemoconv}
GENERATOR=$ROOT/target/release/examples/make-checkpoint
TIME=/usr/bin/time
PRESET=${1:-nano-slice}

log() { echo "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || die "PAIRS must be a positive integer, not '$PAIRS'"
[[ $RANKS =~ ^[1-9][0-9]*$ ]] || die "RANKS must be a positive integer, not '$RANKS'"
[[ -x $TIME ]] || die "$TIME is missing (apt-get install time)"
case $BENCH_DIR/ in
"$ROOT"/*) die "BENCH_DIR ($BENCH_DIR) must be outside the repository ($ROOT)" ;;
esac
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example make-checkpoint)
fi

dir=$BENCH_DIR/$PRESET-r$RANKS
if [[ ! -d $dir/model/.hf_metadata ]]; then
    log "generating $dir/model"
    rm -rf "$dir/model.partial"
    mkdir -p "$dir"
    "$GENERATOR" --preset "$PRESET" --training-ranks "$RANKS" "$dir/model.partial" >&2
    mv "$dir/model.partial" "$dir/model"
fi
flags=(-q)
[[ -n $JOBS ]] && flags+=(-j "$JOBS")

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
# timed LABEL CMD...: wall seconds and peak RSS (KiB) appended to $results/LABEL.
timed() {
    local label=$1 stats start end
    shift
    stats=$(mktemp)
    start=$(date +%s.%N)
    "$TIME" -v -o "$stats" "$@" >&2 || { cat "$stats" >&2; die "'$*' failed"; }
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" -F': ' '/Maximum resident set size/ {printf "%.3f %s\n", e - s, $2}' \
        "$stats" >>"$results/$label"
    rm -f "$stats"
}
round() {
    rm -rf "$dir/copy" "$dir/hf" && sync
    timed cp cp -r "$dir/model" "$dir/copy"
    rm -rf "$dir/copy" && sync
    timed consolidate "$NEMOCONV" consolidate "${flags[@]}" "$dir/model" "$dir/hf"
}

log "warm-up round"
round
rm -f "$results"/*
for i in $(seq "$PAIRS"); do
    log "round $i of $PAIRS"
    round
done
rm -rf "$dir/copy" "$dir/hf"

echo "| $PRESET, $RANKS ranks ($(du -sb "$dir/model" | cut -f1) bytes) | median s | peak RSS MiB |"
echo "| --- | --- | --- |"
for label in cp consolidate; do
    sort -n "$results/$label" | awk -v l="$label" '{t[NR] = $1; r[NR] = $2} END {
        m = int((NR + 1) / 2); printf "| %s | %.2f | %.0f |\n", l, t[m], r[m] / 1024 }'
done
