#!/usr/bin/env bash
# Benchmarks `nemoconv from-hf` and `nemoconv to-hf` against `cp -r` of the same input.
#
# Usage: scripts/bench.sh [PRESET...]      (default: nano-slice many-tensors)
#
# Presets are those of `examples/make-checkpoint.rs`; each is generated once into
# $BENCH_DIR/PRESET/hf. Per preset: one warm-up round (not counted; none when COLD=1), then
# PAIRS rounds of cp -r, from-hf, to-hf (wall time and peak RSS of each), a round-trip
# check of hf/ against back/, and a Markdown table on stdout. Progress goes to stderr.
# PRESET@rN is the same model saved as a NeMo Automodel training checkpoint on N ranks
# (into $BENCH_DIR/PRESET@rN/model); its rounds are cp -r and `nemoconv consolidate`, and
# the check is `nemoconv verify model consolidated`.
#
# Environment:
#   BENCH_DIR   where checkpoints and outputs live (default /work/bench-data; keep it
#               outside the repository: the nano presets need ~4x their size on disk)
#   PAIRS       timed rounds per preset (default 3)
#   JOBS        passed to nemoconv as `-j JOBS` when set
#   NEMOCONV    the binary to time (default target/release/nemoconv)
#   SKIP_BUILD  set to 1 to use existing binaries instead of running cargo build
#   COLD        set to 1 for a cold page cache: `sync` and drop caches before every timed
#               run (needs root), and `cp -r IN OUT && sync` as the baseline (nemoconv fsyncs)
#   MEM_LIMIT   run every timed command inside a memory cgroup with this limit in bytes
#               (e.g. 1073741824), so the page cache cannot hold the checkpoint (needs root;
#               cgroup v1 memory controller, or v2 where it is mounted at /sys/fs/cgroup)
#
# Besides wall time and peak RSS, every run records the read requests the input's disk
# completed and their average size (from /proc/diskstats), and OOM kills in the cgroup.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/work/bench-data}
PAIRS=${PAIRS:-3}
JOBS=${JOBS:-}
COLD=${COLD:-0}
MEM_LIMIT=${MEM_LIMIT:-}
CGROUP=
NEMOCONV=${NEMOCONV:-$ROOT/target/release/nemoconv}
GENERATOR=$ROOT/target/release/examples/make-checkpoint
TIME=/usr/bin/time

log() { echo "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"
}

check_env() {
    [[ $PAIRS =~ ^[1-9][0-9]*$ ]] || die "PAIRS must be a positive integer, not '$PAIRS'"
    [[ -z $JOBS || $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive integer, not '$JOBS'"
    [[ -x $TIME ]] || die "$TIME is missing (apt-get install time)"
    [[ $COLD == 0 || $COLD == 1 ]] || die "COLD must be 0 or 1, not '$COLD'"
    [[ -z $MEM_LIMIT || $MEM_LIMIT =~ ^[1-9][0-9]*$ ]] || die "MEM_LIMIT must be a byte count, not '$MEM_LIMIT'"
    case $BENCH_DIR/ in
    "$ROOT"/*) die "BENCH_DIR ($BENCH_DIR) must be outside the repository ($ROOT)" ;;
    esac
}

build() {
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        log "SKIP_BUILD=1: using existing binaries"
    else
        log "building release binaries"
        (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example make-checkpoint)
    fi
    [[ -x $NEMOCONV ]] || die "$NEMOCONV is missing or not executable"
    [[ -x $GENERATOR ]] || die "$GENERATOR is missing or not executable"
}

# The input directory of a preset: hf, or model for a training checkpoint (PRESET@rN).
input_of() {
    [[ $1 == *@r* ]] && echo model || echo hf
}

# Generates $BENCH_DIR/PRESET/{hf,model} unless it is already there (complete).
ensure_preset() {
    local dir=$BENCH_DIR/$1 input args=(--preset "${1%@r*}")
    input=$(input_of "$1")
    [[ $1 != *@r* ]] || args+=(--training-ranks "${1##*@r}")
    if [[ -d $dir/$input && ! -d $dir/$input.partial ]]; then
        log "$1: reusing $dir/$input"
        return
    fi
    log "$1: generating $dir/$input"
    rm -rf "$dir/$input.partial"
    mkdir -p "$dir"
    "$GENERATOR" "${args[@]}" "$dir/$input.partial" >&2
    mv "$dir/$input.partial" "$dir/$input"
}

# Payload bytes of a checkpoint: the index's total_size, or its safetensors files' bytes.
payload_bytes() {
    local index=$1/model.safetensors.index.json
    if [[ -f $index ]]; then
        grep -o '"total_size": *[0-9]*' "$index" | grep -o '[0-9]*$'
    else
        du -cb "$1"/*.safetensors | tail -1 | cut -f1
    fi
}

# Removes outputs and flushes dirty pages, so no run pays for the previous one's writeback.
clean() {
    rm -rf "$@"
    sync
}

# Creates the memory cgroup for MEM_LIMIT (v2 if the unified hierarchy has the memory
# controller, else v1) and sets CGROUP to its directory.
make_cgroup() {
    [[ -n $MEM_LIMIT ]] || return 0
    local name=nemoconv-bench-$$
    if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        CGROUP=/sys/fs/cgroup/$name
        mkdir -p "$CGROUP" || die "cannot create $CGROUP (root needed)"
        echo "$MEM_LIMIT" >"$CGROUP/memory.max"
        echo 0 >"$CGROUP/memory.swap.max" 2>/dev/null || true
    else
        CGROUP=/sys/fs/cgroup/memory/$name
        mkdir -p "$CGROUP" || die "cannot create $CGROUP (root needed, cgroup v1 memory controller)"
        echo "$MEM_LIMIT" >"$CGROUP/memory.limit_in_bytes"
    fi
    trap 'rmdir "$CGROUP" 2>/dev/null || true' EXIT
    log "timed commands run in $CGROUP, limited to $MEM_LIMIT bytes"
}

# OOM kills so far in the cgroup (0 without one).
oom_kills() {
    [[ -n $CGROUP ]] || { echo 0; return; }
    local f=$CGROUP/memory.oom_control
    [[ -f $f ]] || f=$CGROUP/memory.events
    awk '$1 == "oom_kill" {print $2; found = 1} END {if (!found) print 0}' "$f"
}

# The block device (as named in /proc/diskstats) holding BENCH_DIR.
disk_of() {
    local dev
    dev=$(df --output=source "$BENCH_DIR" | tail -1)
    dev=$(basename "$(readlink -f "$dev")")
    awk -v d="$dev" '$3 == d {found = 1} END {exit !found}' /proc/diskstats || dev=
    echo "$dev"
}

# "reads sectors" completed so far by $DISK.
disk_reads() {
    [[ -n $DISK ]] || { echo "0 0"; return; }
    awk -v d="$DISK" '$3 == d {print $4, $6}' /proc/diskstats
}

# Empties the page cache before a cold run.
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches || die "cannot drop caches (root needed for COLD=1)"
}

# timed LABEL CMD...: runs CMD under time -v (in the cgroup, cold if asked), appends
# "seconds rss_kib read_requests avg_read_kib" to $RESULTS/LABEL.
timed() {
    local label=$1 stats start end before after ooms
    shift
    stats=$(mktemp)
    [[ $COLD == 0 ]] || drop_caches
    ooms=$(oom_kills)
    before=$(disk_reads)
    start=$(date +%s.%N)
    local wrapped=("$@")
    [[ -z $CGROUP ]] || wrapped=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CGROUP" "$@")
    if ! "$TIME" -v -o "$stats" "${wrapped[@]}" >&2; then
        cat "$stats" >&2
        rm -f "$stats"
        die "'$*' failed (OOM kills in the cgroup: $(($(oom_kills) - ooms)))"
    fi
    end=$(date +%s.%N)
    after=$(disk_reads)
    (($(oom_kills) == ooms)) || die "'$*' was OOM-killed in $CGROUP"
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$stats")
    rm -f "$stats"
    if [[ -n $RESULTS ]]; then
        awk -v s="$start" -v e="$end" -v rss="$rss" -v b="$before" -v a="$after" 'BEGIN {
            split(b, x, " "); split(a, y, " "); n = y[1] - x[1]
            printf "%.3f %d %d %.0f\n", e - s, rss, n, (n > 0 ? (y[2] - x[2]) * 512 / 1024 / n : 0)
        }' >>"$RESULTS/$label"
    fi
}

# One round: cp -r, from-hf, to-hf (or cp -r, consolidate). Outputs are deleted before each
# run (untimed).
round() {
    local dir=$1
    if [[ -d $dir/model ]]; then
        clean "$dir/copy"
        timed cp "${COPY[@]}" "$dir/model" "$dir/copy"
        clean "$dir/copy" "$dir/consolidated"
        timed consolidate "$NEMOCONV" consolidate "${NEMO_FLAGS[@]}" "$dir/model" "$dir/consolidated"
        return
    fi
    clean "$dir/copy"
    timed cp "${COPY[@]}" "$dir/hf" "$dir/copy"
    clean "$dir/copy" "$dir/internal"
    timed from-hf "$NEMOCONV" from-hf "${NEMO_FLAGS[@]}" "$dir/hf" "$dir/internal"
    clean "$dir/back"
    timed to-hf "$NEMOCONV" to-hf "${NEMO_FLAGS[@]}" "$dir/internal" "$dir/back"
}

# The round-trip check in Python, for when nemoconv has no working `verify`.
python_verify() {
    local venv=$BENCH_DIR/venv
    if [[ ! -x $venv/bin/python ]]; then
        log "creating $venv with safetensors and numpy"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet safetensors numpy >&2
    fi
    "$venv/bin/python" - "$1" "$2" <<'PY'
"""Every tensor of IN equals OUT by name, dtype, shape and bytes; F32 A_log/D/dt_bias
in OUT may stand for BF16/F16 ones in IN with equal values. Non-weight files are copied."""
import glob, json, os, struct, sys
import numpy as np
from safetensors import safe_open

FP32_NAMES = (".mixer.A_log", ".mixer.D", ".mixer.dt_bias")
WIDTH = {"BF16": "<u2", "F16": "<f2", "F32": "<f4"}

def tensors(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "np") as sf:  # must load with the official reader
            keys = set(sf.keys())
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        assert set(header) == keys, f
        for name, t in header.items():
            out[name] = (f, 8 + n, t)
    return out

def read(entry):
    f, base, t = entry
    start, end = t["data_offsets"]
    with open(f, "rb") as fh:
        fh.seek(base + start)
        return fh.read(end - start)

def as_f32(data, dtype):
    if dtype == "BF16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, WIDTH[dtype]).astype(np.float32)

def same(name, a, b):
    ta, tb = a[2], b[2]
    if ta["shape"] != tb["shape"]:
        return f"shape {ta['shape']} != {tb['shape']}"
    if ta["dtype"] == tb["dtype"]:
        return None if read(a) == read(b) else "bytes differ"
    if name.endswith(FP32_NAMES) and tb["dtype"] == "F32" and ta["dtype"] in WIDTH:
        equal = np.array_equal(as_f32(read(a), ta["dtype"]), as_f32(read(b), "F32"))
        return None if equal else "values differ after the F32 cast"
    return f"dtype {ta['dtype']} != {tb['dtype']}"

src, dst = sys.argv[1], sys.argv[2]
a, b = tensors(src), tensors(dst)
errors = [f"missing in output: {n}" for n in sorted(set(a) - set(b))]
errors += [f"extra in output: {n}" for n in sorted(set(b) - set(a))]
errors += [f"{n}: {why}" for n in sorted(set(a) & set(b)) if (why := same(n, a[n], b[n]))]
for f in sorted(os.listdir(src)):
    if not f.endswith((".safetensors", ".safetensors.index.json")):
        if not os.path.exists(os.path.join(dst, f)):
            errors.append(f"non-weight file not copied: {f}")
for e in errors[:20]:
    print("  " + e, file=sys.stderr)
print(f"python check: {len(a)} tensors, {len(errors)} problems", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

# Prints the round-trip verdict: nemoconv verify when it exists, else the Python check.
verify() {
    local dir=$1
    if [[ -d $dir/model ]]; then
        log "checking consolidation with: nemoconv verify model consolidated"
        "$NEMOCONV" verify "$dir/model" "$dir/consolidated" >&2 && echo "nemoconv verify: OK" && return
        echo "nemoconv verify: FAILED"
        return 1
    fi
    if "$NEMOCONV" verify --help >/dev/null 2>&1; then
        log "checking round trip with: nemoconv verify hf back"
        "$NEMOCONV" verify "$dir/hf" "$dir/back" >&2 && echo "nemoconv verify: OK" && return
        echo "nemoconv verify: FAILED"
        return 1
    fi
    log "nemoconv verify is unavailable; checking round trip in Python"
    python_verify "$dir/hf" "$dir/back" && echo "python check: OK" && return
    echo "python check: FAILED"
    return 1
}

# median FILE COLUMN
median() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" '{v[NR] = $c}
        END {m = int((NR + 1) / 2); print (NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2)}'
}

# Markdown table of the rounds in $RESULTS for an input of $1 payload bytes.
table() {
    local bytes=$1 base label med
    base=$(median "$RESULTS/cp" 1)
    echo "| step | median s | GB/s | x cp -r | peak RSS MiB | read requests | avg read KiB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for label in cp from-hf to-hf consolidate; do
        [[ -s $RESULTS/$label ]] || continue
        med=$(median "$RESULTS/$label" 1)
        awk -v l="$label" -v m="$med" -v b="$bytes" -v base="$base" -v cold="$COLD" \
            -v rss="$(sort -g -k2,2 "$RESULTS/$label" | tail -1 | cut -d' ' -f2)" \
            -v reqs="$(median "$RESULTS/$label" 3)" -v kib="$(median "$RESULTS/$label" 4)" \
            'BEGIN {name = (l == "cp" ? (cold ? "cp -r && sync" : "cp -r") : l)
                printf "| %s | %.3f | %.2f | %.2f | %.0f | %d | %.0f |\n", name, m, b / m / 1e9, m / base, rss / 1024, reqs, kib}'
    done
}

bench_preset() {
    local preset=$1 dir=$BENCH_DIR/$1 bytes files input
    ensure_preset "$preset"
    input=$dir/$(input_of "$preset")
    bytes=$(payload_bytes "$input")
    files=$(find "$input" -maxdepth 1 -name '*.safetensors' | wc -l)
    RESULTS=
    if [[ $COLD == 0 ]]; then
        log "$preset: warm-up"
        round "$dir"
    fi
    RESULTS=$(mktemp -d)
    for ((i = 1; i <= PAIRS; i++)); do
        log "$preset: round $i/$PAIRS"
        round "$dir"
    done
    echo
    echo "### $preset"
    echo
    echo "input: $input, $bytes payload bytes ($(awk -v b="$bytes" 'BEGIN {printf "%.2f", b / 1e9}') GB) in $files safetensors files; $PAIRS rounds"
    echo
    table "$bytes"
    echo
    local status=0
    verify "$dir" || status=1
    rm -rf "$RESULTS"
    clean "$dir/copy" "$dir/internal" "$dir/back" "$dir/consolidated"
    return $status
}

main() {
    case ${1:-} in -h | --help)
        usage
        return
        ;;
    esac
    local presets=("$@")
    ((${#presets[@]})) || presets=(nano-slice many-tensors)
    check_env
    build
    DISK=$(disk_of)
    make_cgroup
    COPY=(cp -r)
    [[ $COLD == 0 ]] || COPY=(sh -c 'cp -r "$0" "$1" && sync')
    NEMO_FLAGS=(-q --force)
    [[ -z $JOBS ]] || NEMO_FLAGS+=(-j "$JOBS")
    echo "## nemoconv benchmark"
    echo
    echo "- command: \`$0 $*\` (BENCH_DIR=$BENCH_DIR PAIRS=$PAIRS JOBS=${JOBS:-unset} COLD=$COLD MEM_LIMIT=${MEM_LIMIT:-unset})"
    echo "- page cache: $([[ $COLD == 1 ]] && echo "dropped before every timed run" || echo "warm (one untimed warm-up round)"); disk: ${DISK:-unknown}"
    echo "- nemoconv: \`$NEMOCONV from-hf|to-hf ${NEMO_FLAGS[*]} IN OUT\`"
    echo "- nproc: $(nproc); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local failed=0 preset
    for preset in "${presets[@]}"; do
        bench_preset "$preset" || failed=1
    done
    ((failed == 0)) || die "a round-trip check failed"
}

main "$@"
