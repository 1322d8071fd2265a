#!/usr/bin/env bash
# End to end on a real cluster: installs deploy/base, backs up a namespace (a StatefulSet with
# data in its volume, a Service, a ConfigMap) with a Backup, deletes the namespace, restores it
# with a Restore, and checks that the objects are back, that the StatefulSet adopted its
# restored pod, and that the data is identical. The coordinator does the rest: it creates the
# repository password and the repository, the PodVolumeBackup, every object of the namespace
# (the claim unbound, the pod with its restore-wait init container first), and the
# PodVolumeRestore.
#
#   KUBECONFIG=~/.kube/config FERRY_IMAGE=ferry:dev scripts/e2e.sh
#
# FERRY_IMAGE must be pullable by the cluster (for kind: kind load docker-image ferry:dev).
# The storage location is a hostPath directory, so use a single-node cluster (kind, k3d,
# minikube). Without KUBECONFIG it prints "skipped: no cluster" and exits 0.
set -euo pipefail

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "skipped: no cluster (set KUBECONFIG to run the end-to-end test)"
  exit 0
fi
: "${FERRY_IMAGE:?set FERRY_IMAGE to an image of this tree that the cluster can pull}"
root=$(cd "$(dirname "$0")/.." && pwd)
# A new namespace, and so a new repository, on every run: the storage directory outlives the
# install, and an earlier install may have had another repository password.
run=$(date +%s)
ns=ferry-e2e-$run
name=e2e-$run
storage=/var/lib/ferry-e2e
timeout_seconds=300
timeout=${timeout_seconds}s
# The command line under test: FERRY_CLI, else built from this tree.
if [[ -z "${FERRY_CLI:-}" ]]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p ferry-coordinator --bin ferry
  FERRY_CLI=$root/target/release/ferry
fi

step() { printf '\n== %s\n' "$*"; }
k() { kubectl "$@"; }

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    echo "-- the coordinator's last log lines"
    k -n ferry logs deployment/ferry-coordinator --tail=40 2>/dev/null || true
  fi
  k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Waits for a Backup or Restore to finish, and fails unless it is Completed.
wait_completed() {
  local resource=$1 deadline=$((SECONDS + timeout_seconds)) phase=""
  while ((SECONDS < deadline)); do
    phase=$(k -n ferry get "$resource" -o jsonpath='{.status.phase}')
    case "$phase" in
      Completed)
        echo "$resource: Completed"
        return 0
        ;;
      FailedValidation | PartiallyFailed | Failed) break ;;
    esac
    sleep 2
  done
  echo "FAILED: $resource is ${phase:-New}"
  k -n ferry get "$resource" -o jsonpath='{.status}'
  echo
  return 1
}

step "installing Ferry (deploy/base) with image $FERRY_IMAGE"
k apply -k "$root/deploy/base"
k wait --for=condition=Established --timeout=$timeout \
  crd/backupstoragelocations.ferry.dev crd/backups.ferry.dev crd/restores.ferry.dev
# A filesystem storage location on the node, mounted at the same path into the agent and the
# coordinator.
mount=$(cat <<EOF
"volumeMounts":[{"name":"storage","mountPath":"$storage"}]
EOF
)
volume=$(cat <<EOF
"volumes":[{"name":"storage","hostPath":{"path":"$storage","type":"DirectoryOrCreate"}}]
EOF
)
k -n ferry patch daemonset ferry-node-agent --type=strategic -p "$(cat <<EOF
{"spec":{"template":{"spec":{
  "containers":[{"name":"node-agent","image":"$FERRY_IMAGE",$mount}],
  $volume}}}}
EOF
)"
# The hostPath directory belongs to root, as do the files the agent writes there, so the
# coordinator runs as root here. An install on object storage needs no such change.
k -n ferry patch deployment ferry-coordinator --type=strategic -p "$(cat <<EOF
{"spec":{"template":{"spec":{
  "securityContext":{"runAsNonRoot":false,"runAsUser":0,"runAsGroup":0},
  "containers":[{"name":"coordinator","image":"$FERRY_IMAGE",
    "env":[{"name":"FERRY_RESTORE_HELPER_IMAGE","value":"$FERRY_IMAGE"}],$mount}],
  $volume}}}}
EOF
)"
k apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: BackupStorageLocation
metadata: {name: default, namespace: ferry}
spec: {provider: filesystem, path: $storage, default: true}
EOF
k -n ferry rollout status daemonset/ferry-node-agent --timeout=$timeout
k -n ferry rollout status deployment/ferry-coordinator --timeout=$timeout
k -n ferry wait --for=jsonpath='{.status.phase}'=Available \
  backupstoragelocations.ferry.dev/default --timeout=$timeout

step "a StatefulSet with data in namespace $ns, its volume opted in, hooks, a Service and a ConfigMap"
k create namespace "$ns"
k -n "$ns" create configmap settings --from-literal=mode=fast
k apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: app, namespace: $ns}
spec: {clusterIP: None, selector: {app: app}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: app, namespace: $ns}
spec:
  serviceName: app
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata:
      labels: {app: app}
      annotations:
        backup.ferry.dev/backup-volumes: data
        pre.hook.backup.ferry.dev/command: '["sh", "-c", "date > /data/quiesced"]'
        post.hook.restore.ferry.dev/command: '["sh", "-c", "cat /data/nested/dir/leaf > /tmp/post-restore-hook"]'
    spec:
      containers:
        - name: app
          image: busybox:1.36
          command: [sh, -c, "sleep 1000000"]
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
EOF
k -n "$ns" rollout status statefulset/app --timeout=$timeout
# shellcheck disable=SC2016 # expanded by the pod's shell
k -n "$ns" exec app-0 -- sh -c 'for i in $(seq 1 200); do head -c $((i * 997)) /dev/urandom > /data/file-$i; done; mkdir -p /data/nested/dir; echo hello > /data/nested/dir/leaf'
files='cd /data && find . -type f ! -name quiesced | sort | xargs md5sum'
before=$(k -n "$ns" exec app-0 -- sh -c "$files")

step "Backup $name of namespace $ns"
k apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Backup
metadata: {name: $name, namespace: ferry}
spec:
  includedNamespaces: [$ns]
  defaultVolumesToFsBackup: false
  storageLocation: default
EOF
wait_completed "backups.ferry.dev/$name"
volumes=$(k -n ferry get "backups.ferry.dev/$name" -o jsonpath='{.status.podVolumeBackups.completed}')
if [[ "$volumes" != 1 ]]; then
  echo "FAILED: the backup completed ${volumes:-no} pod volume backups, not 1"
  exit 1
fi
hooks=$(k -n ferry get "backups.ferry.dev/$name" -o jsonpath='{.status.hooksAttempted}/{.status.hooksFailed}')
if [[ "$hooks" != 1/ ]]; then
  echo "FAILED: the backup ran hooks ${hooks:-none} (attempted/failed), not 1/"
  exit 1
fi
password=$(k -n ferry get secret ferry-repo-credentials -o jsonpath='{.data.repository-password}')
if [[ -z "$password" ]]; then
  echo "FAILED: the Secret ferry-repo-credentials has no repository-password"
  exit 1
fi

step "the command line: version, describe, logs"
"$FERRY_CLI" version
if ! "$FERRY_CLI" backup describe "$name" --details | grep -q Completed; then
  echo "FAILED: ferry backup describe does not show the backup Completed"
  exit 1
fi
if ! "$FERRY_CLI" backup logs "$name" | grep -q "$name"; then
  echo "FAILED: ferry backup logs does not show the backup's log"
  exit 1
fi

step "deleting namespace $ns"
k delete namespace "$ns" --wait=true --timeout=$timeout

step "Restore $name from backup $name"
k apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Restore
metadata: {name: $name, namespace: ferry}
spec: {backupName: $name}
EOF
wait_completed "restores.ferry.dev/$name"
first_init=$(k -n "$ns" get pod app-0 -o jsonpath='{.spec.initContainers[0].name}')
if [[ "$first_init" != restore-wait ]]; then
  echo "FAILED: the restored pod's first init container is ${first_init:-missing}, not restore-wait"
  exit 1
fi
k -n "$ns" wait --for=condition=Ready pod/app-0 --timeout=$timeout
mode=$(k -n "$ns" get configmap settings -o jsonpath='{.data.mode}')
if [[ "$mode" != fast ]]; then
  echo "FAILED: the ConfigMap came back with mode=${mode:-nothing}"
  exit 1
fi
k -n "$ns" get service/app statefulset/app >/dev/null
k -n "$ns" wait --for=jsonpath='{.metadata.ownerReferences[0].kind}'=StatefulSet pod/app-0 \
  --timeout=$timeout

step "comparing"
after=$(k -n "$ns" exec app-0 -- sh -c "$files")
if [[ "$before" != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAILED: the restored volume differs"
  exit 1
fi
k -n "$ns" exec app-0 -- test ! -e /data/.velero
k -n "$ns" exec app-0 -- test -s /data/quiesced
hooked=$(k -n "$ns" exec app-0 -- cat /tmp/post-restore-hook)
if [[ "$hooked" != hello ]]; then
  echo "FAILED: the post-restore hook did not read the restored data (it wrote '${hooked}')"
  exit 1
fi
echo "passed: the namespace is back, its StatefulSet owns the restored pod, the restored volume is identical, the marker is gone, and the hooks ran"
