#!/usr/bin/env bash
# Starts or stops the test S3 server (moto_server) on 127.0.0.1, installing moto if missing.
#
#   scripts/test-services.sh start   # prints the endpoint; writes target/test-services/s3.env
#   scripts/test-services.sh stop
#
# FERRY_S3_PORT picks the port (default 9311). The tests read FERRY_TEST_S3_ENDPOINT.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/target/test-services"
port=${FERRY_S3_PORT:-9311}
endpoint="http://127.0.0.1:$port"
pidfile="$state/moto.pid"

# opendal and curl must reach 127.0.0.1 directly, whatever proxy is configured.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

install_moto() {
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "installing moto (server) from PyPI" >&2
    python3 -m pip install --quiet 'moto[server]'
  fi
}

running() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {
  mkdir -p "$state"
  if running; then
    echo "$endpoint"
    return
  fi
  install_moto
  nohup moto_server -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$endpoint/"; then
      printf 'export FERRY_TEST_S3_ENDPOINT=%s\n' "$endpoint" >"$state/s3.env"
      echo "$endpoint"
      return
    fi
    if ! running; then
      echo "moto_server exited; its log:" >&2
      cat "$state/moto.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "moto_server did not answer on $endpoint within 20 s" >&2
  exit 1
}

stop() {
  if running; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do
      running || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile" "$state/s3.env"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
