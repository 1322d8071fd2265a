#!/usr/bin/env bash
# Starts or stops the test S3 servers (moto_server) on 127.0.0.1, installing moto if missing.
#
#   scripts/test-services.sh start   # prints the endpoint; writes target/test-services/s3.env
#   scripts/test-services.sh stop
#
# Two servers run:
# - the test S3 server, which checks no credentials (FERRY_S3_PORT, default 9311). The tests
#   read FERRY_TEST_S3_ENDPOINT.
# - a second one that checks signatures, as AWS does (FERRY_S3_AUTH_PORT, default 9312), with
#   one IAM user allowed all of S3 and one bucket, for tests of rejected credentials. The tests
#   read FERRY_TEST_S3_AUTH_ENDPOINT, FERRY_TEST_S3_AUTH_ACCESS_KEY_ID,
#   FERRY_TEST_S3_AUTH_SECRET_ACCESS_KEY and FERRY_TEST_S3_AUTH_BUCKET.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/target/test-services"
port=${FERRY_S3_PORT:-9311}
endpoint="http://127.0.0.1:$port"
pidfile="$state/moto.pid"
auth_port=${FERRY_S3_AUTH_PORT:-9312}
auth_endpoint="http://127.0.0.1:$auth_port"
auth_pidfile="$state/moto-auth.pid"
# The second server's key and bucket, written once it is set up and checks signatures.
auth_env="$state/s3-auth.env"
auth_bucket=ferry-auth

# opendal, curl and boto3 must reach 127.0.0.1 directly, whatever proxy is configured.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# moto brings boto3, which sets up the second server.
install_moto() {
  if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c 'import boto3' 2>/dev/null; then
    echo "installing moto (server) from PyPI" >&2
    python3 -m pip install --quiet 'moto[server]'
  fi
}

# running PIDFILE: whether the server recorded in PIDFILE is alive.
running() {
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# launch PIDFILE LOG PROBE COMMAND...: starts a server and waits until PROBE (a URL) answers.
launch() {
  local pidfile=$1 log=$2 probe=$3
  shift 3
  # A server that answers already is somebody else's (another checkout's, say): using it would
  # mix that checkout's state, keys included, with this one's.
  if curl -s -o /dev/null "$probe"; then
    echo "something else already answers on $probe; stop it, or pick other ports with FERRY_S3_PORT and FERRY_S3_AUTH_PORT" >&2
    exit 1
  fi
  nohup "$@" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$probe"; then
      return
    fi
    if ! running "$pidfile"; then
      echo "moto_server exited; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "moto_server did not answer on $probe within 20 s" >&2
  exit 1
}

# halt PIDFILE: stops the server recorded in PIDFILE, if any.
halt() {
  if running "$1"; then
    kill "$(cat "$1")"
    for _ in $(seq 1 50); do
      running "$1" || break
      sleep 0.1
    done
  fi
  rm -f "$1"
}

# The second server: moto_server, except that a signature is checked against the request as
# AWS reads it. moto checks it against the URL as Werkzeug rebuilds it, with escapes undone
# (getmoto/moto#5948), so that a correctly signed listing under a prefix with a slash, or an
# object whose key holds + or =, fails with SignatureDoesNotMatch. Here the check sees the
# path and query as sent, decoded and encoded again as SigV4 prescribes.
auth_server=$(
  cat <<'EOF'
import sys
from urllib.parse import quote, unquote, urlsplit

import flask
from moto.core.authorization import ActionAuthenticatorMixin
from moto.server import main

check = ActionAuthenticatorMixin._authenticate_and_authorize_action


def encode(text, safe=""):
    return quote(text, safe="-_.~" + safe)


def check_as_sent(self, *args, **kwargs):
    request = flask.request
    pairs = (p.partition("=") for p in request.query_string.decode().split("&") if p)
    query = "&".join(f"{encode(unquote(k))}={encode(unquote(v))}" for k, _, v in pairs)
    uri = self.uri
    self.uri = urlsplit(uri)._replace(path=encode(request.path, "/"), query=query).geturl()
    try:
        return check(self, *args, **kwargs)
    finally:
        self.uri = uri


ActionAuthenticatorMixin._authenticate_and_authorize_action = check_as_sent
sys.exit(main(sys.argv[1:]))
EOF
)

# Creates, in the second server while it still checks nothing, an IAM user whose inline
# policy allows every S3 action, an access key of that user and the bucket; then turns
# checking on and prints the key and bucket as shell exports.
#
# moto checks requests once INITIAL_NO_AUTH_ACTION_COUNT of them have been served without
# checks (never, by default); POST /moto-api/reset-auth sets that count while it runs, and 0
# checks every request from then on: the signature (SignatureDoesNotMatch for a wrong
# secret, InvalidAccessKeyId for a key ID no IAM user has) and then the user's policies
# (AccessDenied). Unsigned S3 requests fail then too (moto answers them with a 500).
set_up_auth() {
  python3 - "$auth_endpoint" "$auth_bucket" <<'EOF'
import json
import shlex
import sys
import urllib.request

import boto3
from botocore.exceptions import ClientError

endpoint, bucket = sys.argv[1:]


def client(service, key_id, secret):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


# Nothing is checked yet: any key does for the setup.
iam = client("iam", "setup", "setup")
iam.create_user(UserName="ferry-test")
iam.put_user_policy(
    UserName="ferry-test",
    PolicyName="s3",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
    ),
)
key = iam.create_access_key(UserName="ferry-test")["AccessKey"]
key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]
client("s3", key_id, secret).create_bucket(Bucket=bucket)

# Not form-encoded: moto reads the count from the raw body.
reset_auth = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth",
    data=b"0",
    headers={"Content-Type": "text/plain"},
    method="POST",
)
urllib.request.urlopen(reset_auth).read()

# The key works, for keys and prefixes that need escapes too, and a wrong secret does not.
s3 = client("s3", key_id, secret)
s3.put_object(Bucket=bucket, Key="a/b+c=d", Body=b"")
s3.list_objects_v2(Bucket=bucket, Prefix="a/b+")
s3.delete_object(Bucket=bucket, Key="a/b+c=d")
try:
    client("s3", key_id, secret + "x").list_objects_v2(Bucket=bucket)
    sys.exit(f"the S3 server on {endpoint} accepted a wrong secret")
except ClientError as err:
    if err.response["Error"]["Code"] != "SignatureDoesNotMatch":
        raise

for name, value in [
    ("ENDPOINT", endpoint),
    ("ACCESS_KEY_ID", key_id),
    ("SECRET_ACCESS_KEY", secret),
    ("BUCKET", bucket),
]:
    print(f"export FERRY_TEST_S3_AUTH_{name}={shlex.quote(value)}")
EOF
}

start() {
  mkdir -p "$state"
  if ! running "$pidfile"; then
    install_moto
    launch "$pidfile" "$state/moto.log" "$endpoint/" moto_server -H 127.0.0.1 -p "$port"
  fi
  # A second server without its key was not set up to the end: it starts anew.
  if ! running "$auth_pidfile" || [[ ! -s "$auth_env" ]]; then
    halt "$auth_pidfile"
    rm -f "$auth_env"
    install_moto
    # S3 requests without a signature fail once checking is on; the moto API answers them.
    launch "$auth_pidfile" "$state/moto-auth.log" "$auth_endpoint/moto-api/" \
      python3 -c "$auth_server" -H 127.0.0.1 -p "$auth_port"
    if ! set_up_auth >"$auth_env.new"; then
      echo "setting up the S3 server on $auth_endpoint failed; its log:" >&2
      cat "$state/moto-auth.log" >&2
      halt "$auth_pidfile"
      rm -f "$auth_env.new"
      exit 1
    fi
    mv "$auth_env.new" "$auth_env"
  fi
  {
    printf 'export FERRY_TEST_S3_ENDPOINT=%s\n' "$endpoint"
    cat "$auth_env"
  } >"$state/s3.env"
  echo "$endpoint"
}

stop() {
  halt "$pidfile"
  halt "$auth_pidfile"
  rm -f "$state/s3.env" "$auth_env"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
