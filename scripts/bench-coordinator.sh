#!/usr/bin/env bash
# The coordinator's figures, on the Kubernetes test server with the release binaries: idle RSS,
# and the time and peak RSS to turn one Backup of 500 pods x 2 volumes into PodVolumeBackups.
# Arguments go to ferry-coordinator-bench (--pods, --volumes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-coordinator -p ferry-tests --bin ferry-coordinator --bin ferry-coordinator-bench
NO_PROXY="127.0.0.1,localhost" target/release/ferry-coordinator-bench --coordinator target/release/ferry-coordinator "$@"
