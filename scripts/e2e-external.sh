#!/usr/bin/env bash
# Runs the coordinator's and the node agent's end-to-end suites against an external Kubernetes
# API server in place of the test server each test starts for itself (tests/README.md).
#
#   FERRY_TEST_KUBECONFIG=~/.kube/config scripts/e2e-external.sh   # a real cluster
#   scripts/e2e-external.sh --test-server                          # the standalone test server
#
# With neither, it says "skipped: no cluster" and exits 0. With --test-server it starts
# `ferry-test-apiserver` as a process of its own, without Ferry's CRDs, and points
# FERRY_TEST_KUBECONFIG at it; CI runs it so. The suite runs twice in a row on the one server,
# as Ferry's own identity and then (FERRY_TEST_RBAC=1) as the ServiceAccounts of deploy/base,
# and the server must then hold nothing the suite made but Ferry's CRDs. Tests that need the
# test server report "skipped: needs the test server"; they are counted and listed. Extra
# arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
server_pid=
services_started=
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
  fi
  if [[ -n "$services_started" ]]; then
    scripts/test-services.sh stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ "${1:-}" != "--test-server" && -z "${FERRY_TEST_KUBECONFIG:-}" ]]; then
  echo "skipped: no cluster (set FERRY_TEST_KUBECONFIG, or pass --test-server)"
  exit 0
fi

# The suites run the workspace's binaries: the node agent, the coordinator, the command line.
cargo build -q --locked --workspace
if [[ "${1:-}" == "--test-server" ]]; then
  shift
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  "$target_dir/debug/ferry-test-apiserver" --kubeconfig "$work/kubeconfig" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    [[ -s "$work/kubeconfig" ]] && break
    sleep 0.1
  done
  [[ -s "$work/kubeconfig" ]] || { cat "$work/server.log" >&2; exit 1; }
  export FERRY_TEST_KUBECONFIG="$work/kubeconfig"
fi

if [[ -z "${FERRY_TEST_S3_ENDPOINT:-}" ]]; then
  scripts/install-test-deps.sh
  scripts/test-services.sh start >/dev/null
  services_started=1
  # shellcheck source=/dev/null
  source target/test-services/s3.env
fi
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export FERRY_TEST_BASELINE="$work/baseline" FERRY_TEST_SKIP_LOG="$work/skipped"

nextest=
cargo nextest --version >/dev/null 2>&1 && nextest=1

leftovers() {
  if [[ -n "$nextest" ]]; then
    cargo nextest run --locked -p ferry-tests --test leftovers --run-ignored ignored-only \
      --status-level fail --final-status-level none --hide-progress-bar
  else
    cargo test -q --locked -p ferry-tests --test leftovers -- --ignored
  fi
}

suite() {
  echo "== the end-to-end suite against $FERRY_TEST_KUBECONFIG${FERRY_TEST_RBAC:+, as the ServiceAccounts of deploy/base}"
  : >"$FERRY_TEST_SKIP_LOG"
  if [[ -n "$nextest" ]]; then
    cargo nextest run --locked -p ferry-coordinator -p ferry-node-agent -E 'kind(test)' \
      --no-fail-fast --hide-progress-bar "$@"
  else
    cargo test --locked -p ferry-coordinator -p ferry-node-agent --tests --no-fail-fast "$@"
  fi
  echo "$(wc -l <"$FERRY_TEST_SKIP_LOG") test(s) skipped: needs the test server"
  sort "$FERRY_TEST_SKIP_LOG" | sed 's/^/  /'
}

leftovers
suite "$@"
FERRY_TEST_RBAC=1 suite "$@"
leftovers
echo "nothing left behind but Ferry's CRDs"
