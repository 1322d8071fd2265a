#!/usr/bin/env bash
# Ferry's test command: installs what the tests run against (restic, curl, moto), checks
# formatting and lints, then runs every test of the workspace with the test S3 server up, and
# the end-to-end suites once more against the standalone test API server as an external one,
# plain and with deploy/base's RBAC (scripts/e2e-external.sh --test-server).
# Arguments go to the test runner, e.g. `scripts/test.sh transfer_cli`; with them, the run
# against the external server is left out.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# A one-off build gains nothing from incremental artifacts, which only take disk space.
if [[ -n "${CI:-}" ]]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

trap 'scripts/test-services.sh stop' EXIT
scripts/test-services.sh start >/dev/null
# shellcheck source=/dev/null
source target/test-services/s3.env
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
if [[ $# -eq 0 ]]; then
  scripts/e2e-external.sh --test-server
fi
