#!/usr/bin/env bash
# The coordinator's figures, on the Kubernetes test server with the release binaries: idle RSS,
# the time and peak RSS to turn one Backup of 500 pods x 2 volumes into PodVolumeBackups, and
# the time, items per second and peak RSS to back up a namespace of 10,000 objects and restore
# it into another namespace. Arguments go to ferry-coordinator-bench (--pods, --volumes,
# --objects).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-coordinator -p ferry-tests --bin ferry-coordinator --bin ferry-coordinator-bench
NO_PROXY="127.0.0.1,localhost" target/release/ferry-coordinator-bench --coordinator target/release/ferry-coordinator "$@"
