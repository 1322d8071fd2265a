#!/usr/bin/env bash
# Ferry vs restic benchmark (method: /work/shared/reference/engine.md section 5).
#
# What it measures
#   One deterministic data set (scripts/gen-bench-data.py, about 1 GiB at --scale 1.0:
#   20,000 small files of 1-64 KiB, three 100 MiB random files, one 64 MiB log) is backed
#   up and restored by restic (0.14, Debian package) and by Ferry's CLI
#   (target/release/ferry-node-agent). Each round runs restic, then Ferry, each from a fresh
#   local repository (and, for restic, a fresh cache in the work dir; Ferry runs without a
#   cache, which is its default). Per tool and round:
#     backup1  first backup into the empty repository
#              (restic's repository is created beforehand by an untimed `restic init`;
#               Ferry creates its repository inside this step, so that cost is included)
#     backup2  the same data again, unchanged: restic finds the parent itself (same --host
#              and path); Ferry is given --parent <snapshot of backup1>
#     restore  backup2's snapshot into a new empty directory, which is then compared with
#              the source (`diff -r`, untimed); any difference makes the script exit 1
#   Both tools back up the data directory's *contents* as the snapshot root (restic runs as
#   `cd DATA && restic backup .`, and restic 0.14 restores that straight into --target).
#
# How each step is measured
#   wall  elapsed seconds, from GNU time (%e)
#   rss   peak resident set size, from GNU time (%M). This is the largest peak of any single
#         process of the step: GNU time gets it from wait4(), and Linux folds in the peak of
#         every descendant that was waited for (Ferry's CLI waits for its `transfer` child).
#   tree  peak of the *sum* of VmRSS over every process of the step at the same moment,
#         sampled from /proc every 20 ms (see sampler below). For Ferry this adds the CLI
#         parent that is alive next to the transfer child; for restic (one process) it only
#         confirms rss. Sampling can miss short spikes, so it may read a little low; and
#         summing VmRSS counts pages shared by both processes (the ferry-node-agent binary,
#         about 10 MiB) twice, so for Ferry it may read a little high. The true peak of the
#         tree lies between rss and tree.
#   cpu   user + system CPU seconds (GNU time %U + %S, children included)
#   Small scales mostly measure fixed costs: e.g. each open of a repository derives the key
#   with scrypt, whose memory (N × r × 128 bytes: 32 MiB for restic's calibrated keys, 128 MiB
#   for rustic_core's N = 2^17 default) sets a floor under the peak RSS.
#   The data set and repositories stay in the page cache (nothing here drops caches), so the
#   numbers are warm-cache numbers. Nothing needs privileges, except that restic and GNU time
#   are installed with apt-get when missing.
#
# How to read the output
#   First the raw numbers of every round and step, then a summary table per op: the median
#   wall time of each tool, Ferry÷restic as the median of the per-round ratios (below 1 means
#   Ferry is faster), the median peak RSS (GNU time) of each tool and its ratio (median of the
#   per-round ratios), and Ferry's median sampled tree peak.
#
# Usage
#   scripts/bench.sh [--scale S] [--rounds N] [--workdir DIR] [--keep]
#     --scale S     data set scale (default 1.0 = about 1 GiB; 0.02 for a smoke test)
#     --rounds N    rounds (default 3)
#     --workdir DIR where data, repositories and restores go; must be missing or empty
#                   (default: a new directory under ${TMPDIR:-/tmp})
#     --keep        keep the work dir (and every round's repositories and restores)
#   FERRY_BIN=/path/to/ferry-node-agent skips `cargo build --release -p ferry-node-agent`.
#   Disk space needed: about 4.5 × the data set (data, two repositories, two restores).

set -euo pipefail

SCALE=1.0
ROUNDS=3
WORKDIR=""
KEEP=0

usage() { sed -n '/^# Usage/,/^# *Disk space/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --scale) SCALE=${2:?--scale needs a value}; shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || die "--scale must be a positive number"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# --- tools ------------------------------------------------------------------------------
apt_install() {
    command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available"
    echo "bench: installing $1 with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
command -v restic >/dev/null || apt_install restic
[[ -x /usr/bin/time ]] || apt_install time
command -v python3 >/dev/null || die "python3 is required"

if [[ -n ${FERRY_BIN:-} ]]; then
    FERRY=$FERRY_BIN
else
    echo "bench: building: cargo build --release -p ferry-node-agent"
    (cd "$ROOT" && cargo build --release -p ferry-node-agent)
    FERRY="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferry-node-agent"
fi
[[ -x $FERRY ]] || die "no executable at $FERRY"

# --- work dir ---------------------------------------------------------------------------
if [[ -n $WORKDIR ]]; then
    if [[ -e $WORKDIR ]]; then
        [[ -d $WORKDIR && -z $(ls -A "$WORKDIR") ]] || die "--workdir $WORKDIR must be missing or empty"
    fi
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
else
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
fi
cleanup() {
    if ((KEEP)); then
        echo "bench: kept the work dir $WORKDIR"
    else
        rm -rf -- "$WORKDIR"
    fi
}
trap cleanup EXIT
echo "bench: work dir $WORKDIR$( ((KEEP)) || echo ' (removed at the end; --keep keeps it)')"

DATA="$WORKDIR/data"
PASSWORD_FILE="$WORKDIR/password"
RESULTS="$WORKDIR/results.tsv"
SAMPLER="$WORKDIR/rss-sampler.py"
echo "bench-password-$$" >"$PASSWORD_FILE"
: >"$RESULTS"

# Samples the process tree below PID (PID itself, GNU time, excluded) until PID exits; writes
# "<peak of the summed VmRSS in KiB> <largest VmHWM seen for any one process in KiB>".
cat >"$SAMPLER" <<'EOF'
import os, sys, time

def children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except OSError:
        pass
    return kids

def status_kib(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split()[:2]
                    values[key] = int(value)
    except OSError:
        pass
    return values.get("VmRSS:", 0), values.get("VmHWM:", 0)

root, out = int(sys.argv[1]), sys.argv[2]
tree_peak = hwm_peak = 0
while os.path.exists(f"/proc/{root}/status"):
    todo, tree = children(root), 0
    while todo:
        pid = todo.pop()
        rss, hwm = status_kib(pid)
        tree += rss
        hwm_peak = max(hwm_peak, hwm)
        todo.extend(children(pid))
    tree_peak = max(tree_peak, tree)
    time.sleep(0.02)
with open(out, "w") as f:
    f.write(f"{tree_peak} {hwm_peak}\n")
EOF

# --- helpers ----------------------------------------------------------------------------
# measure ROUND TOOL OP DIR CMD... : runs CMD in DIR under GNU time and the sampler, logs its
# output to $RUN/TOOL-OP.log and appends one line to $RESULTS.
measure() {
    local round=$1 tool=$2 op=$3 dir=$4
    shift 4
    local base="$RUN/$tool-$op"
    (cd "$dir" && exec /usr/bin/time -f '%e %M %U %S' -o "$base.time" "$@") >"$base.log" 2>&1 &
    local pid=$!
    python3 "$SAMPLER" "$pid" "$base.rss" &
    local sampler=$!
    local rc=0
    wait "$pid" || rc=$?
    wait "$sampler" || true
    if ((rc != 0)); then
        echo "bench: round $round: $tool $op failed (exit $rc); its output:" >&2
        tail -n 30 "$base.log" >&2
        exit 1
    fi
    local wall rss user sys tree hwm
    read -r wall rss user sys < <(tail -n 1 "$base.time")
    read -r tree hwm <"$base.rss"
    local cpu
    cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$op" "$wall" "$rss" "$tree" "$cpu" >>"$RESULTS"
    printf '  %-6s %-8s wall %7.2f s  rss %7.1f MiB  tree %7.1f MiB  cpu %7.2f s\n' \
        "$tool" "$op" "$wall" "$(kib_to_mib "$rss")" "$(kib_to_mib "$tree")" "$cpu"
    if ((hwm > rss + 1024)); then
        echo "  note: the sampler saw one process peak at $(kib_to_mib "$hwm") MiB, above GNU time's $(kib_to_mib "$rss") MiB" >&2
    fi
}

kib_to_mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

# verify TOOL RESTORED : compares a restore with the source; records a mismatch.
MISMATCHES=0
verify() {
    local tool=$1 restored=$2
    if diff -r -q --no-dereference "$DATA" "$restored" >"$RUN/$tool-diff.txt" 2>&1; then
        echo "  $tool   restore is identical to the source"
    else
        MISMATCHES=$((MISMATCHES + 1))
        echo "  $tool   RESTORE DIFFERS from the source ($(wc -l <"$RUN/$tool-diff.txt") lines of diff), e.g.:" >&2
        head -n 5 "$RUN/$tool-diff.txt" | sed 's/^/    /' >&2
    fi
}

# check_incremental TOOL : warns when backup2 did not reuse the parent as expected.
check_incremental() {
    local log="$RUN/$1-backup2.log"
    case $1 in
        restic) grep -q 'using parent snapshot' "$log" && grep -Eq '0 new, +0 changed' "$log" ;;
        ferry) grep -q 'against parent' "$log" && grep -Eq '\(0 new, 0 changed' "$log" ;;
    esac || echo "  warning: $1 backup2 did not report an unchanged backup against its parent; see $log" >&2
}

repo_size() { du -sb "$1" | cut -f1; }

# --- data -------------------------------------------------------------------------------
echo "bench: generating the data set (scale $SCALE)"
python3 "$SCRIPT_DIR/gen-bench-data.py" "$DATA" --seed 42 --scale "$SCALE"
echo "bench: $(restic version | head -n 1)"
echo "bench: ferry $FERRY ($("$FERRY" --version))"
echo "bench: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM"

export RESTIC_PASSWORD_FILE="$PASSWORD_FILE"
SIZES=()

# --- rounds -----------------------------------------------------------------------------
for ((round = 1; round <= ROUNDS; round++)); do
    RUN="$WORKDIR/round-$round"
    mkdir -p "$RUN"
    echo "bench: round $round of $ROUNDS"

    # restic
    export RESTIC_REPOSITORY="$RUN/restic-repo"
    RESTIC_CACHE="$RUN/restic-cache"
    restic init --repository-version 2 --cache-dir "$RESTIC_CACHE" >"$RUN/restic-init.log" 2>&1 \
        || { cat "$RUN/restic-init.log" >&2; die "restic init failed"; }
    measure "$round" restic backup1 "$DATA" restic backup --host bench --cache-dir "$RESTIC_CACHE" .
    measure "$round" restic backup2 "$DATA" restic backup --host bench --cache-dir "$RESTIC_CACHE" .
    check_incremental restic
    restic_id=$(sed -n 's/^snapshot \([0-9a-f]\{8,\}\) saved$/\1/p' "$RUN/restic-backup2.log")
    [[ -n $restic_id ]] || die "no snapshot ID in $RUN/restic-backup2.log"
    measure "$round" restic restore "$RUN" restic restore "$restic_id" --cache-dir "$RESTIC_CACHE" \
        --target "$RUN/restic-restore"
    verify restic "$RUN/restic-restore"
    restic_size=$(repo_size "$RUN/restic-repo")

    # Ferry
    FERRY_REPO="$RUN/ferry-repo"
    measure "$round" ferry backup1 "$RUN" "$FERRY" backup --source "$DATA" --repository "$FERRY_REPO" \
        --password-file "$PASSWORD_FILE"
    parent=$(sed -n 's/^snapshot ID: \([0-9a-f]\{64\}\)$/\1/p' "$RUN/ferry-backup1.log")
    [[ -n $parent ]] || die "no snapshot ID in $RUN/ferry-backup1.log"
    measure "$round" ferry backup2 "$RUN" "$FERRY" backup --source "$DATA" --repository "$FERRY_REPO" \
        --password-file "$PASSWORD_FILE" --parent "$parent"
    check_incremental ferry
    ferry_id=$(sed -n 's/^snapshot ID: \([0-9a-f]\{64\}\)$/\1/p' "$RUN/ferry-backup2.log")
    [[ -n $ferry_id ]] || die "no snapshot ID in $RUN/ferry-backup2.log"
    measure "$round" ferry restore "$RUN" "$FERRY" restore --snapshot "$ferry_id" \
        --target "$RUN/ferry-restore" --repository "$FERRY_REPO" --password-file "$PASSWORD_FILE"
    verify ferry "$RUN/ferry-restore"
    ferry_size=$(repo_size "$FERRY_REPO")

    SIZES+=("round $round: restic $restic_size bytes, ferry $ferry_size bytes")
    if ((!KEEP)); then
        rm -rf -- "$RUN/restic-repo" "$RUN/restic-cache" "$RUN/restic-restore" \
            "$RUN/ferry-repo" "$RUN/ferry-restore"
    fi
done

# --- report -----------------------------------------------------------------------------
echo
echo "Repository size after backup2:"
printf '  %s\n' "${SIZES[@]}"
python3 - "$RESULTS" "$SCALE" "$ROUNDS" <<'EOF'
import sys
from statistics import median

path, scale, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = {}
for line in open(path):
    rnd, tool, op, wall, rss, tree, cpu = line.split("\t")
    rows[(int(rnd), tool, op)] = (float(wall), int(rss) / 1024, int(tree) / 1024, float(cpu))

ops = ("backup1", "backup2", "restore")
print("\nRaw numbers per round: wall s / peak RSS MiB (GNU time) / tree RSS MiB (sampled) / CPU s")
for op in ops:
    for tool in ("restic", "ferry"):
        cells = []
        for r in range(1, rounds + 1):
            w, m, t, c = rows[(r, tool, op)]
            cells.append(f"{w:.2f}/{m:.0f}/{t:.0f}/{c:.2f}")
        print(f"  {op:8} {tool:6}  " + "  ".join(cells))

def fmt(x, digits=2):
    return f"{x:.{digits}f}"

header = ("op", "restic wall s", "ferry wall s", "ferry÷restic wall",
          "restic RSS MiB", "ferry RSS MiB", "ferry÷restic RSS", "ferry tree MiB")
table = []
for op in ops:
    get = lambda tool, i: [rows[(r, tool, op)][i] for r in range(1, rounds + 1)]
    rw, fw, rm, fm, ft = get("restic", 0), get("ferry", 0), get("restic", 1), get("ferry", 1), get("ferry", 2)
    wall_ratio = [f / r if r > 0 else float("nan") for f, r in zip(fw, rw)]
    rss_ratio = [f / r for f, r in zip(fm, rm)]
    span = lambda xs: f" ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else ""
    table.append((op, fmt(median(rw)), fmt(median(fw)), fmt(median(wall_ratio)) + span(wall_ratio),
                  fmt(median(rm), 0), fmt(median(fm), 0), fmt(median(rss_ratio)) + span(rss_ratio),
                  fmt(median(ft), 0)))

print(f"\nSummary (scale {scale}, {rounds} round(s); medians; ratios are medians of per-round ratios, range in brackets)")
widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
for row in [header] + table:
    print("  " + "  ".join(str(cell).rjust(w) if i else str(cell).ljust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))))
EOF

if ((MISMATCHES)); then
    echo "bench: $MISMATCHES restore(s) differ from the source" >&2
    exit 1
fi
echo "bench: all restores are identical to the source"
