#!/usr/bin/env bash
# Installs what Ferry's tests run against: the restic CLI (Debian's 0.14), curl, util-linux
# (unshare, setpriv), Prometheus and promtool (Debian's prometheus package), openssl (the test
# CA) and moto's S3 server. kubectl (for `kubectl kustomize`) is not in Debian's archive: it must
# be on the machine already, and a missing one is warned of. Idempotent; needs root for apt-get.
set -euo pipefail

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet 'moto[server]'
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "warning: kubectl is missing, so the overlay tests, which render deploy/overlays with kubectl kustomize, will fail" >&2
fi
restic version
