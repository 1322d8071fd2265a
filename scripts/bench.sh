#!/usr/bin/env bash
# Ferry vs restic benchmark (method: /work/shared/reference/engine.md section 5).
#
# What it measures
#   A deterministic data set (scripts/gen-bench-data.py; --set chooses it) is backed up and
#   restored by restic (0.14, Debian package) and by Ferry's CLI
#   (target/release/ferry-node-agent). Each round runs restic, then Ferry, each from a fresh
#   repository (a new local directory, or with --s3 a new bucket; and, for restic, a fresh
#   cache in the work dir; Ferry runs without a cache, which is its default). Per tool and
#   round:
#     backup1  first backup into the empty repository
#              (restic's repository is created beforehand by an untimed `restic init`;
#               Ferry creates its repository inside this step, so that cost is included)
#     backup2  the same data again, unchanged: each tool finds its parent itself, restic by
#              --host and path, Ferry by its host, label and tags
#     restore  backup2's snapshot into a new empty directory, which is then compared with
#              the source (`diff -r`, untimed); any difference makes the script exit 1
#   Both tools back up the data directory's *contents* as the snapshot root (restic runs as
#   `cd DATA && restic backup .`, and restic 0.14 restores that straight into --target).
#   With --s3 ENDPOINT (or --s3-start) both tools' repositories live in an S3 server instead
#   of the work dir: per round and tool a new bucket is created (an unsigned PUT, untimed) and
#   both tools get the repository s3:ENDPOINT/BUCKET/repo, with AWS_ACCESS_KEY_ID=ferry-test
#   and AWS_SECRET_ACCESS_KEY=ferry-test-secret (the test S3 server, moto, checks no keys)
#   and with 127.0.0.1, localhost and the endpoint's host in NO_PROXY. The steps then include
#   the requests to the server; the server's own CPU and memory are not counted (it is no
#   process of the step). The repository sizes are then the objects' bytes, summed from a
#   listing of the bucket (`du -sb` of a local repository also counts its directories, about
#   1 MiB for restic's), and each round's buckets are emptied and deleted at its end (kept
#   with --keep).
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
#   The sets, at --scale 1.0:
#     mixed  about 1 GiB: 20,000 files of 1-64 KiB in 200 directories, three 100 MiB random
#            files, one 64 MiB log; where the cost per byte decides
#     small  about 430 MiB: 150,000 files of 100-6,000 bytes in 3,000 directories; where the
#            cost per file decides
#   With --set all, each set in turn, with its own rounds and report.
#
# Usage
#   scripts/bench.sh [--set mixed|small|all] [--scale S] [--seed N] [--rounds N] [--workdir DIR]
#                    [--keep] [--s3 ENDPOINT | --s3-start]
#     --set SET     the data set: mixed (the default), small, or all (both, one after the other)
#     --scale S     data set scale (default 1.0; 0.02 for a smoke test)
#     --seed N      the data set's seed (default 42); another seed gives other bytes and sizes
#     --rounds N    rounds (default 3)
#     --workdir DIR where data, repositories and restores go; must be missing or empty
#                   (default: a new directory under ${TMPDIR:-/tmp})
#     --keep        keep the work dir (and every round's repositories and restores; with
#                   --s3, every round's buckets)
#     --s3 ENDPOINT put both tools' repositories in the S3 server at ENDPOINT (such as
#                   http://127.0.0.1:9311), a new bucket per round and tool; the server must
#                   let an unsigned PUT create a bucket and accept the key ferry-test, as
#                   moto does. The script stops at once if it does not answer.
#     --s3-start    run scripts/test-services.sh start (the test S3 server, moto, on
#                   127.0.0.1:9311) and use the endpoint it prints, as --s3 does
#   FERRY_BIN=/path/to/ferry-node-agent skips `cargo build --release -p ferry-node-agent`.
#   Disk space needed: about 4.5 × the largest data set (data, two repositories, two restores).
#   With --s3 the work dir needs about 3 × (data, two restores) and the S3 server holds a
#   round's two repositories (about 1.5 ×; moto keeps them in its memory or temporary files)
#   until the round ends, or every round's with --keep.

set -euo pipefail

SCALE=1.0
SEED=42
SETS=(mixed)
ROUNDS=3
WORKDIR=""
KEEP=0
S3_ENDPOINT=""
S3_START=0

usage() { sed -n '/^# Usage/,/^$/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --scale) SCALE=${2:?--scale needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --set)
            case ${2:-} in
                mixed | small) SETS=("$2") ;;
                all) SETS=(mixed small) ;;
                *) die "--set must be mixed, small or all, not '${2:-}'" ;;
            esac
            shift 2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --s3) S3_ENDPOINT=${2:?--s3 needs an endpoint, such as http://127.0.0.1:9311}; shift 2 ;;
        --s3-start) S3_START=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || die "--scale must be a positive number"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer"
[[ -n $S3_ENDPOINT ]] && ((S3_START)) && die "--s3 and --s3-start exclude each other"
# check_endpoint ENDPOINT : dies unless ENDPOINT is scheme://host[:port], without a path.
check_endpoint() {
    [[ $1 =~ ^https?://[^/?#]+/?$ ]] \
        || die "the S3 endpoint must be http(s)://host[:port] without a path, such as http://127.0.0.1:9311, not '$1'"
}
if [[ -n $S3_ENDPOINT ]]; then
    check_endpoint "$S3_ENDPOINT"
fi

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

# --- S3 server (--s3, --s3-start) -------------------------------------------------------
if ((S3_START)); then
    echo "bench: starting the test S3 server: scripts/test-services.sh start"
    S3_ENDPOINT=$("$SCRIPT_DIR/test-services.sh" start | tail -n 1) \
        || die "scripts/test-services.sh start failed"
    check_endpoint "$S3_ENDPOINT"
fi
if [[ -n $S3_ENDPOINT ]]; then
    S3_ENDPOINT=${S3_ENDPOINT%/}
    command -v curl >/dev/null || apt_install curl
    # restic, Ferry, curl and the helper below reach the server directly, whatever proxy is set.
    s3_host=${S3_ENDPOINT#*://}
    s3_host=${s3_host%:*}
    export NO_PROXY="127.0.0.1,localhost,$s3_host${NO_PROXY:+,$NO_PROXY}${no_proxy:+,$no_proxy}"
    export no_proxy=$NO_PROXY
    export AWS_ACCESS_KEY_ID=ferry-test AWS_SECRET_ACCESS_KEY=ferry-test-secret
    # Any HTTP answer will do; no answer at all (refused, unknown host, timeout) stops here.
    curl -s -o /dev/null --noproxy '*' --connect-timeout 5 --max-time 15 "$S3_ENDPOINT/" \
        || die "the S3 server at $S3_ENDPOINT does not answer (curl exit $?); start one with" \
            "scripts/test-services.sh start, or pass --s3-start"
fi

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
# Buckets made in the S3 server and not deleted yet (with --keep, every one).
BUCKETS=()
cleanup() {
    if ((KEEP)); then
        echo "bench: kept the work dir $WORKDIR"
        ((${#BUCKETS[@]} == 0)) || echo "bench: kept the buckets ${BUCKETS[*]} in $S3_ENDPOINT"
    else
        delete_buckets
        rm -rf -- "$WORKDIR"
    fi
}
trap cleanup EXIT
echo "bench: work dir $WORKDIR$( ((KEEP)) || echo ' (removed at the end; --keep keeps it)')"

PASSWORD_FILE="$WORKDIR/password"
SAMPLER="$WORKDIR/rss-sampler.py"
S3_HELPER="$WORKDIR/s3.py"
echo "bench-password-$$" >"$PASSWORD_FILE"

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

# `size ENDPOINT BUCKET PREFIX` prints the summed size of the objects under PREFIX;
# `delete ENDPOINT BUCKET` deletes every object of BUCKET and then BUCKET. The requests go
# past any proxy and are signed (SigV4, region us-east-1) with AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY: moto lets anonymous requests list a bucket, not delete its objects.
cat >"$S3_HELPER" <<'EOF'
import datetime
import hashlib
import hmac
import os
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def quote(text, safe=""):
    return urllib.parse.quote(text, safe="-_.~" + safe)


def hmac_sha256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def request(method, endpoint, path, query=()):
    """Sends a signed request without a body to ENDPOINT/PATH?QUERY; returns the body."""
    host = urllib.parse.urlsplit(endpoint).netloc
    path = quote(path, "/")
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query))
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, query, *(f"{k}:{headers[k]}" for k in sorted(headers)),
                           "", signed, EMPTY_SHA256])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac_sha256(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}")
    url = f"{endpoint}{path}" + (f"?{query}" if query else "")
    with opener.open(urllib.request.Request(url, headers=headers, method=method),
                     timeout=120) as response:
        return response.read()


def local(tag):
    return tag.rsplit("}", 1)[-1]


def objects(endpoint, bucket, prefix):
    token = None
    while True:
        query = [("list-type", "2"), ("prefix", prefix)]
        if token:
            query.append(("continuation-token", token))
        root = ET.fromstring(request("GET", endpoint, f"/{bucket}", query))
        truncated, token = False, None
        for child in root:
            name = local(child.tag)
            if name == "Contents":
                fields = {local(field.tag): field.text for field in child}
                yield fields["Key"], int(fields["Size"])
            elif name == "IsTruncated":
                truncated = child.text == "true"
            elif name == "NextContinuationToken":
                token = child.text
        if not (truncated and token):
            return


command, endpoint, bucket = sys.argv[1:4]
if command == "size":
    print(sum(size for _, size in objects(endpoint, bucket, sys.argv[4])))
elif command == "delete":
    for key, _ in list(objects(endpoint, bucket, "")):
        request("DELETE", endpoint, f"/{bucket}/{key}")
    request("DELETE", endpoint, f"/{bucket}")
else:
    sys.exit(f"unknown command {command}")
EOF

# --- helpers ----------------------------------------------------------------------------
# new_bucket NAME : creates the bucket NAME in the S3 server, which must not have it yet.
new_bucket() {
    local bucket=$1 code
    code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 30 -I "$S3_ENDPOINT/$bucket") || true
    [[ $code == 404 ]] || die "bucket $bucket in $S3_ENDPOINT: expected none (HTTP 404), got HTTP $code"
    curl -sf -o /dev/null -X PUT --noproxy '*' --max-time 30 "$S3_ENDPOINT/$bucket" \
        || die "creating the bucket $bucket in $S3_ENDPOINT failed"
    BUCKETS+=("$bucket")
}

# delete_buckets : deletes every bucket in BUCKETS with all its objects; warns on failure.
delete_buckets() {
    local bucket
    for bucket in ${BUCKETS[@]+"${BUCKETS[@]}"}; do
        python3 "$S3_HELPER" delete "$S3_ENDPOINT" "$bucket" \
            || echo "bench: warning: deleting the bucket $bucket in $S3_ENDPOINT failed" >&2
    done
    BUCKETS=()
}

# new_repository TOOL : sets REPO to a new, empty repository for TOOL in this round: a
# directory in the round's dir, or with --s3 the prefix repo/ of a new bucket.
new_repository() {
    if [[ -n $S3_ENDPOINT ]]; then
        local bucket="$S3_RUN-$round-$1"
        new_bucket "$bucket"
        REPO="s3:$S3_ENDPOINT/$bucket/repo"
    else
        REPO="$RUN/$1-repo"
    fi
}
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

# repo_size REPOSITORY : prints its size in bytes (a directory's, or the objects' under its
# prefix in the S3 server).
repo_size() {
    if [[ $1 == s3:* ]]; then
        local rest=${1#"s3:$S3_ENDPOINT/"}
        python3 "$S3_HELPER" size "$S3_ENDPOINT" "${rest%%/*}" "${rest#*/}/" \
            || die "listing $1 failed"
    else
        du -sb "$1" | cut -f1
    fi
}

# --- sets -------------------------------------------------------------------------------
# report SET : prints the raw numbers and the summary table of SET's rounds.
report() {
    python3 - "$RESULTS" "$SCALE" "$ROUNDS" "$1" <<'EOF'
import sys
from statistics import median

path, scale, rounds, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = {}
for line in open(path):
    rnd, tool, op, wall, rss, tree, cpu = line.split("\t")
    rows[(int(rnd), tool, op)] = (float(wall), int(rss) / 1024, int(tree) / 1024, float(cpu))

ops = ("backup1", "backup2", "restore")
print(f"\nSet {name}, raw numbers per round: wall s / peak RSS MiB (GNU time) / tree RSS MiB (sampled) / CPU s")
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

print(f"\nSummary of the set {name} (scale {scale}, {rounds} round(s); medians; ratios are medians of per-round ratios, range in brackets)")
widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
for row in [header] + table:
    print("  " + "  ".join(str(cell).rjust(w) if i else str(cell).ljust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))))
EOF
}

# bench_round : one round of restic and then Ferry on $DATA, in $RUN. Both find their parent
# themselves for backup2: restic by host and path, Ferry by host, label and tags.
bench_round() {
    # restic
    new_repository restic
    export RESTIC_REPOSITORY=$REPO
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
    restic_size=$(repo_size "$RESTIC_REPOSITORY")

    # Ferry
    new_repository ferry
    FERRY_REPO=$REPO
    measure "$round" ferry backup1 "$RUN" "$FERRY" backup --source "$DATA" --repository "$FERRY_REPO" \
        --password-file "$PASSWORD_FILE"
    measure "$round" ferry backup2 "$RUN" "$FERRY" backup --source "$DATA" --repository "$FERRY_REPO" \
        --password-file "$PASSWORD_FILE"
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
        delete_buckets
    fi
}

# bench_set SET : generates SET's data, runs every round on it and prints its report.
bench_set() {
    local set=$1
    DATA="$WORKDIR/data-$set"
    RESULTS="$WORKDIR/results-$set.tsv"
    : >"$RESULTS"
    echo "bench: generating the data set $set (seed $SEED, scale $SCALE)"
    python3 "$SCRIPT_DIR/gen-bench-data.py" "$DATA" --set "$set" --seed "$SEED" --scale "$SCALE"
    if [[ -n $S3_ENDPOINT ]]; then
        # Bucket names: lower case, digits and hyphens; unique to this run and set.
        S3_RUN="ferry-bench-$(date +%s)-$$-$set"
        echo "bench: repositories in the S3 server at $S3_ENDPOINT, a new bucket $S3_RUN-ROUND-TOOL for each"
    fi
    SIZES=()
    for ((round = 1; round <= ROUNDS; round++)); do
        RUN="$WORKDIR/$set-round-$round"
        mkdir -p "$RUN"
        echo "bench: set $set, round $round of $ROUNDS"
        bench_round
    done
    echo
    echo "Set $set: repository size after backup2:"
    printf '  %s\n' "${SIZES[@]}"
    report "$set"
    ((KEEP)) || rm -rf -- "$DATA"
}

echo "bench: $(restic version | head -n 1)"
echo "bench: ferry $FERRY ($("$FERRY" --version))"
echo "bench: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM"
export RESTIC_PASSWORD_FILE="$PASSWORD_FILE"
for set in "${SETS[@]}"; do
    bench_set "$set"
done

if ((MISMATCHES)); then
    echo "bench: $MISMATCHES restore(s) differ from the source" >&2
    exit 1
fi
echo "bench: all restores are identical to the source"
