#!/usr/bin/env bash
# The node agent's figures, on the Kubernetes test server with the release binaries: idle RSS,
# peak RSS during a 1 GiB backup, and the time to back up 50 volumes of 1 MiB at once next
# to the restic CLI run once per volume. Arguments go to ferry-agent-bench (--volumes,
# --volume-mib, --large-mib).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v restic >/dev/null || scripts/install-test-deps.sh
cargo build --release --quiet -p ferry-node-agent -p ferry-tests --bin ferry-node-agent --bin ferry-agent-bench
NO_PROXY="127.0.0.1,localhost" target/release/ferry-agent-bench --agent target/release/ferry-node-agent "$@"
