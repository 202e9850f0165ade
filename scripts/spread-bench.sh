#!/usr/bin/env bash
# Times a `nemoconv from-hf` spread over M workers, each as a node of a parallel file system
# would see it (issue 15): its reads throttled in its own blkio cgroup, a cold page cache,
# `-j 1`. For each split mode and each M: sync and drop caches, start the M workers at once,
# wait for all, `nemoconv finalize`, and time the whole; then print per worker the bytes it
# wrote and its wall time, and a Markdown table on stdout:
#   split | M | wall s | speed-up vs M=1 | largest/mean bytes | bytes per worker (GB)
# The last output of each mode is checked with `nemoconv verify` against a one-process run
# (unthrottled, untimed). Progress goes to stderr.
#
# Usage: scripts/spread-bench.sh [M...]      (default: 1 2 4 8)
#
# Needs root (drop caches, cgroups). Runs under `flock $BENCH_LOCK`, so it never overlaps
# another timing run. Outputs go to $OUT_DIR (about 2x the input's size) and are removed at
# the end; the input is only read.
#
# Environment:
#   INPUT       HF checkpoint to convert (default /work/bench-data/nano-slice/hf)
#   OUT_DIR     scratch directory (default /tmp/issue-15)
#   SPLITS      split modes to time, in order (default "bytes"; e.g. "bytes shards")
#   SHARD_CAP   --max-shard-size (default 500MB)
#   READ_BPS    read throttle per worker, bytes/s (default 100000000)
#   NEMOCONV    binary (default target/release/nemoconv)
#   BENCH_LOCK  lock file shared with other benchmarks (default /work/bench.lock)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INPUT=${INPUT:-/work/bench-data/nano-slice/hf}
OUT_DIR=${OUT_DIR:-/tmp/issue-15}
SPLITS=${SPLITS:-bytes}
SHARD_CAP=${SHARD_CAP:-500MB}
READ_BPS=${READ_BPS:-100000000}
NEMOCONV=${NEMOCONV:-$ROOT/target/release/nemoconv}
BENCH_LOCK=${BENCH_LOCK:-/work/bench.lock}
TIME=/usr/bin/time
CGROUP_PREFIX=nemoconv-spread-bench

log() { echo "spread-bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ ${SPREAD_BENCH_LOCKED:-0} != 1 ]]; then
    log "waiting for $BENCH_LOCK"
    SPREAD_BENCH_LOCKED=1 exec flock "$BENCH_LOCK" "$0" "$@"
fi

COUNTS=("$@")
[[ ${#COUNTS[@]} -gt 0 ]] || COUNTS=(1 2 4 8)
for m in "${COUNTS[@]}"; do
    [[ $m =~ ^[1-9][0-9]*$ ]] || die "worker counts must be positive integers, not '$m'"
done
for split in $SPLITS; do
    [[ $split == bytes || $split == shards ]] || die "SPLITS holds '$split'; use bytes and/or shards"
done
[[ $READ_BPS =~ ^[1-9][0-9]*$ ]] || die "READ_BPS must be a positive integer"
[[ -d $INPUT ]] || die "no input checkpoint at $INPUT"
[[ -x $NEMOCONV ]] || die "$NEMOCONV is missing; cargo build --release"
[[ -x $TIME ]] || die "$TIME is missing (apt-get install time)"
[[ $(id -u) == 0 ]] || die "root needed (drop caches, cgroups)"

# MAJ:MIN of the whole disk holding INPUT (throttles apply to disks, not partitions).
disk_of() {
    local source parent
    source=$(findmnt -no SOURCE --target "$1")
    parent=$(lsblk -ndo PKNAME "$source" 2>/dev/null || true)
    [[ -n $parent ]] && source=/dev/$parent
    lsblk -ndo MAJ:MIN "$source" | tr -d ' '
}
DISK=$(disk_of "$INPUT")
[[ $DISK =~ ^[0-9]+:[0-9]+$ ]] || die "cannot find the disk of $INPUT (got '$DISK')"

# The v2 hierarchy with the io controller (/sys/fs/cgroup, or /sys/fs/cgroup/unified beside
# v1), if any.
V2=
for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if grep -qw io "$root/cgroup.controllers" 2>/dev/null; then
        V2=$root
        break
    fi
done

# The cgroup of worker K with reads throttled to READ_BPS: v2 io.max where available, else
# v1 blkio. Prints its directory.
make_cgroup() {
    local dir
    if [[ -n $V2 ]]; then
        dir=$V2/$CGROUP_PREFIX-$1
        mkdir -p "$dir"
        echo "$DISK rbps=$READ_BPS" >"$dir/io.max"
    else
        dir=/sys/fs/cgroup/blkio/$CGROUP_PREFIX-$1
        mkdir -p "$dir"
        echo "$DISK $READ_BPS" >"$dir/blkio.throttle.read_bps_device"
    fi
    echo "$dir"
}

remove_cgroups() {
    local dir
    for dir in ${V2:+$V2/$CGROUP_PREFIX-*} /sys/fs/cgroup/blkio/$CGROUP_PREFIX-*; do
        [[ -d $dir ]] && rmdir "$dir" 2>/dev/null || true
    done
}

cleanup() {
    remove_cgroups
    rm -rf "$OUT_DIR"
}
trap cleanup EXIT

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

now() { date +%s.%N; }

# run_spread SPLIT M OUT: the M throttled workers at once, then finalize; sets WALL, BYTES
# (one entry per worker) and prints one line per worker on stderr.
run_spread() {
    local split=$1 m=$2 out=$3 k start pids=() dir
    rm -rf "$out" "$(dirname "$out")/.$(basename "$out").nemoconv-tmp-work"
    drop_caches
    start=$(now)
    for ((k = 0; k < m; k++)); do
        dir=$(make_cgroup "$k")
        sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" \
            "$TIME" -f "worker-seconds %e" "$NEMOCONV" from-hf -j 1 --max-shard-size "$SHARD_CAP" \
            --worker "$k/$m" --split "$split" "$INPUT" "$out" 2>"$OUT_DIR/worker-$k.log" &
        pids+=($!)
    done
    for k in "${!pids[@]}"; do
        wait "${pids[$k]}" || die "worker $k/$m failed: $(cat "$OUT_DIR/worker-$k.log")"
    done
    "$NEMOCONV" finalize "$out" || die "finalize $out failed"
    WALL=$(echo "$(now) - $start" | bc)
    BYTES=()
    for ((k = 0; k < m; k++)); do
        local bytes secs
        bytes=$(sed -n 's/.*wrote [0-9]* tensors, \([0-9]*\) bytes.*/\1/p' "$OUT_DIR/worker-$k.log")
        secs=$(sed -n 's/^worker-seconds //p' "$OUT_DIR/worker-$k.log")
        [[ -n $bytes && -n $secs ]] || die "no summary from worker $k: $(cat "$OUT_DIR/worker-$k.log")"
        BYTES+=("$bytes")
        log "$split M=$m worker $k: $bytes bytes in $secs s"
    done
    remove_cgroups
}

mkdir -p "$OUT_DIR"
log "input $INPUT on disk $DISK; reads of each worker throttled to $READ_BPS B/s; -j 1 each"
ROWS=()
for split in $SPLITS; do
    base=
    for m in "${COUNTS[@]}"; do
        out=$OUT_DIR/out-$split
        run_spread "$split" "$m" "$out"
        [[ -n $base ]] || base=$WALL
        stats=$(printf '%s\n' "${BYTES[@]}" | awk '
            {sum += $1; if ($1 > max) max = $1; list = list sep sprintf("%.2f", $1 / 1e9); sep = ", "}
            END {printf "%.2f|%s", (sum ? max / (sum / NR) : 0), list}')
        ROWS+=("$(printf '| %s | %d | %.1f | %.2f | %s | %s |' "$split" "$m" "$WALL" \
            "$(echo "$base / $WALL" | bc -l)" "${stats%%|*}" "${stats#*|}")")
        log "row: ${ROWS[-1]}"
    done
done

log "one-process run (unthrottled, untimed) to verify against"
"$NEMOCONV" from-hf -q --max-shard-size "$SHARD_CAP" "$INPUT" "$OUT_DIR/single"
for split in $SPLITS; do
    log "verify $OUT_DIR/out-$split (M=${COUNTS[-1]}) against the one-process run"
    "$NEMOCONV" verify "$OUT_DIR/single" "$OUT_DIR/out-$split" >&2 || die "out-$split differs"
    cmp_out=$(cd "$OUT_DIR" && for f in single/*; do cmp -s "$f" "out-$split/${f#single/}" || echo "$f"; done)
    [[ -z $cmp_out ]] || die "files differ byte for byte: $cmp_out"
done

echo "| split | M | wall s | speed-up vs M=1 | largest/mean bytes | bytes per worker (GB) |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
