#!/usr/bin/env bash
# Ferry's embedded default, with no cluster: builds the binaries, makes a kubelet-like pods
# directory with one emptyDir volume, backs it up to a local repository with progress shown,
# restores it into a second pod as a restore would, releases that pod with the restore helper,
# and compares the trees. Runs `restic check` on the repository when restic is installed.
#
#   scripts/demo.sh [WORKDIR]     (default: a new directory under ${TMPDIR:-/tmp})
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)

step() { printf '\n== %s\n' "$*"; }

step "building ferry-node-agent and ferry-restore-helper"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p ferry-node-agent --bins
bin="$root/target/debug"

pod_uid=8d3c9a52-4e1f-4b6a-9f0e-2a7c51d0e001
restored_uid=1f7be0c4-9a3d-4c55-8e21-6b0d93a4e002
restore_uid=c0ffee00-5eed-4d1e-a11c-0123456789ab
host_pods="$work/host_pods"
volume="$host_pods/$pod_uid/volumes/kubernetes.io~empty-dir/data"
restored_volumes="$host_pods/$restored_uid/volumes/kubernetes.io~empty-dir"
repo="$work/repository"
password="$work/repository-password"

step "making a pod volume at $volume"
python3 - "$volume" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
os.makedirs(root, exist_ok=True)
for i in range(300):
    d = os.path.join(root, f"dir{i % 12}", f"sub{i % 3}")
    os.makedirs(d, exist_ok=True)
    size = rng.choice([0, 100, 4096, 40_000, 300_000, 2_000_000])
    path = os.path.join(d, f"file-{i}.{'log' if i % 3 == 0 else 'bin'}")
    with open(path, "wb") as f:
        if i % 3 == 0:
            line = f"2026-11-22T00:00:00Z pod=app-0 request={i} status=200\n".encode()
            f.write((line * (size // len(line) + 1))[:size])
        else:
            f.write(rng.randbytes(size))
os.makedirs(os.path.join(root, "empty"), exist_ok=True)
os.symlink("dir0/sub0/file-0.log", os.path.join(root, "latest.log"))
PY
echo "$(find "$volume" -type f | wc -l) files, $(du -sh "$volume" | cut -f1)"
python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$password"

step "backing up (ferry-node-agent backup)"
"$bin/ferry-node-agent" backup --source "$volume" --repository "$repo" --password-file "$password" \
  --tag backup=demo --tag ns=default --tag pod=app-0 --tag "pod-uid=$pod_uid" --tag volume=data \
  --label default/app-0/data --progress-interval 1s | tee "$work/backup.log"
snapshot=$(sed -n 's/^snapshot ID: //p' "$work/backup.log")

step "restoring into a new pod's volume with restore UID $restore_uid"
"$bin/ferry-node-agent" restore --snapshot "$snapshot" --target "$restored_volumes/data" \
  --repository "$repo" --password-file "$password" --restore-uid "$restore_uid" --progress-interval 1s
ls -la "$restored_volumes/data/.velero"

step "the restore helper releases the pod (ferry-restore-helper)"
"$bin/ferry-restore-helper" "$restore_uid" --restores-dir "$restored_volumes" --timeout 1m

step "comparing the volumes"
diff -r --no-dereference "$volume" "$restored_volumes/data"
echo "identical"

if command -v restic >/dev/null 2>&1; then
  step "restic reads Ferry's repository"
  restic --repo "$repo" --password-file "$password" --no-cache snapshots
  restic --repo "$repo" --password-file "$password" --no-cache check --read-data
else
  step "restic is not installed: skipping restic check (apt-get install restic)"
fi

step "done; everything is in $work"
