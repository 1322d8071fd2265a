#!/usr/bin/env bash
# End to end on a real cluster: installs deploy/base, backs up a StatefulSet's volume through
# the node agent, deletes the namespace, restores into a new pod held by the restore helper,
# and compares the data. Until the coordinator's controllers exist, this script does the
# coordinator's part by hand: it creates the repository, the PodVolumeBackup, the restored
# pod with its restore-wait init container, and the PodVolumeRestore.
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
ns=ferry-e2e
storage=/var/lib/ferry-e2e
timeout=300s

step() { printf '\n== %s\n' "$*"; }
k() { kubectl "$@"; }

cleanup() {
  k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "installing Ferry (deploy/base) with image $FERRY_IMAGE"
k apply -k "$root/deploy/base"
k -n ferry set image daemonset/ferry-node-agent node-agent="$FERRY_IMAGE"
# A filesystem storage location on the node, mounted into the agent at the same path.
k -n ferry patch daemonset ferry-node-agent --type=strategic -p "$(cat <<EOF
{"spec":{"template":{"spec":{
  "containers":[{"name":"node-agent","volumeMounts":[{"name":"storage","mountPath":"$storage"}]}],
  "volumes":[{"name":"storage","hostPath":{"path":"$storage","type":"DirectoryOrCreate"}}]}}}}
EOF
)"
password=$(head -c 32 /dev/urandom | base64)
k -n ferry create secret generic ferry-repo-credentials \
  --from-literal=repository-password="$password" --dry-run=client -o yaml | k apply -f -
k apply -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: BackupStorageLocation
metadata: {name: default, namespace: ferry}
spec: {provider: filesystem, path: $storage, default: true}
EOF
k -n ferry rollout status daemonset/ferry-node-agent --timeout=$timeout

step "a StatefulSet with data in namespace $ns"
k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
k apply -f - <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: app, namespace: $ns}
spec:
  serviceName: app
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
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
k -n "$ns" exec app-0 -- sh -c 'for i in $(seq 1 200); do head -c $((i * 997)) /dev/urandom > /data/file-$i; done; mkdir -p /data/nested/dir; echo hello > /data/nested/dir/leaf'
before=$(k -n "$ns" exec app-0 -- sh -c 'cd /data && find . -type f | sort | xargs md5sum')

pod_uid=$(k -n "$ns" get pod app-0 -o jsonpath='{.metadata.uid}')
node=$(k -n "$ns" get pod app-0 -o jsonpath='{.spec.nodeName}')
agent=$(k -n ferry get pod -l app.kubernetes.io/name=ferry-node-agent \
  --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].metadata.name}')
repository="$storage/restic/$ns"

step "creating the repository $repository (the coordinator's job)"
k -n ferry exec -i "$agent" -- /usr/local/bin/ferry-node-agent init \
  --repository "$repository" --password-file /dev/stdin <<<"$password"

step "backing up app-0's volume on $node"
pvb=$(k create -o jsonpath='{.metadata.name}' -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: PodVolumeBackup
metadata:
  generateName: e2e-
  namespace: ferry
  labels: {ferry.dev/node: $node}
spec:
  node: $node
  pod: {namespace: $ns, name: app-0, uid: $pod_uid}
  volume: data
  storageLocation: default
  repository: $repository
  tags: {backup: e2e, ns: $ns, pod: app-0, volume: data}
EOF
)
k -n ferry wait --for=jsonpath='{.status.phase}'=Completed "podvolumebackup/$pvb" --timeout=$timeout
snapshot=$(k -n ferry get podvolumebackup "$pvb" -o jsonpath='{.status.snapshotID}')
echo "snapshot $snapshot"

step "deleting namespace $ns"
k delete namespace "$ns" --wait=true --timeout=$timeout

step "restoring into a new pod held by the restore helper"
k create namespace "$ns"
restore_uid=$(k create -o jsonpath='{.metadata.uid}' -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: Restore
metadata: {generateName: e2e-, namespace: ferry}
spec: {backupName: e2e}
EOF
)
restore_name=$(k -n ferry get restores.ferry.dev -o jsonpath="{.items[?(@.metadata.uid=='$restore_uid')].metadata.name}")
k apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-app-0, namespace: $ns}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: app-0, namespace: $ns}
spec:
  nodeName: $node
  initContainers:
    - name: restore-wait
      image: $FERRY_IMAGE
      command: [/usr/local/bin/ferry-restore-helper, "$restore_uid", --timeout, 10m]
      securityContext: {runAsUser: 0}
      volumeMounts: [{name: data, mountPath: /restores/data}]
  containers:
    - name: app
      image: busybox:1.36
      command: [sh, -c, "sleep 1000000"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: data-app-0}}
EOF
new_uid=$(k -n "$ns" get pod app-0 -o jsonpath='{.metadata.uid}')
pvr=$(k create -o jsonpath='{.metadata.name}' -f - <<EOF
apiVersion: ferry.dev/v1alpha1
kind: PodVolumeRestore
metadata:
  generateName: e2e-
  namespace: ferry
  labels: {ferry.dev/node: $node}
  ownerReferences:
    - {apiVersion: ferry.dev/v1alpha1, kind: Restore, name: $restore_name, uid: $restore_uid, controller: true}
spec:
  pod: {namespace: $ns, name: app-0, uid: $new_uid}
  volume: data
  storageLocation: default
  repository: $repository
  snapshotID: $snapshot
  sourceNamespace: $ns
EOF
)
k -n ferry wait --for=jsonpath='{.status.phase}'=Completed "podvolumerestore/$pvr" --timeout=$timeout
k -n "$ns" wait --for=condition=Ready pod/app-0 --timeout=$timeout

step "comparing"
after=$(k -n "$ns" exec app-0 -- sh -c 'cd /data && find . -type f | sort | xargs md5sum')
if [[ "$before" != "$after" ]]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "FAILED: the restored volume differs"
  exit 1
fi
k -n "$ns" exec app-0 -- test ! -e /data/.velero
echo "passed: the restored volume is identical, and the marker is gone"
