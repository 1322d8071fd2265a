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
#
# And a TLS front of the first server (FERRY_S3_TLS_PORT, default 9313), with a certificate for
# 127.0.0.1 and localhost signed by a test CA made when it starts. The tests read
# FERRY_TEST_S3_TLS_ENDPOINT, FERRY_TEST_S3_TLS_CA (the CA's PEM file) and
# FERRY_TEST_S3_TLS_OTHER_CA (a CA that signed nothing of it).
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
tls_port=${FERRY_S3_TLS_PORT:-9313}
tls_endpoint="https://127.0.0.1:$tls_port"
tls_pidfile="$state/tls-front.pid"
tls_dir="$state/tls"

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
  if curl -sk -o /dev/null "$probe"; then
    echo "something else already answers on $probe; stop it, or pick other ports with FERRY_S3_PORT, FERRY_S3_AUTH_PORT and FERRY_S3_TLS_PORT" >&2
    exit 1
  fi
  nohup "$@" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -sfk -o /dev/null "$probe"; then
      return
    fi
    if ! running "$pidfile"; then
      echo "the server for $probe exited; its log:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "nothing answered on $probe within 20 s" >&2
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

# make_certificates: a test CA, a server key and certificate it signed for 127.0.0.1 and
# localhost, and a second CA that signed nothing, all new, in $tls_dir.
make_certificates() {
  rm -rf "$tls_dir"
  mkdir -p "$tls_dir"
  local ca_extensions=(-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign")
  for ca in ca other-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj "/CN=Ferry test $ca" "${ca_extensions[@]}" \
      -keyout "$tls_dir/$ca.key" -out "$tls_dir/$ca.pem" 2>/dev/null
  done
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$tls_dir/server.key" -out "$tls_dir/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls_dir/server.ext"
  openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.pem" -CAkey "$tls_dir/ca.key" \
    -CAcreateserial -days 7 -extfile "$tls_dir/server.ext" -out "$tls_dir/server.pem" 2>/dev/null
}

# The TLS front: accepts TLS on one port and passes the bytes on to a plain server's port.
tls_front=$(
  cat <<'EOF'
import asyncio
import ssl
import sys

port, upstream, certificate, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


asyncio.run(main())
EOF
)

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
  if ! running "$tls_pidfile"; then
    make_certificates
    launch "$tls_pidfile" "$state/tls-front.log" "$tls_endpoint/" \
      python3 -c "$tls_front" "$tls_port" "$port" "$tls_dir/server.pem" "$tls_dir/server.key"
  fi
  {
    printf 'export FERRY_TEST_S3_ENDPOINT=%s\n' "$endpoint"
    cat "$auth_env"
    printf 'export FERRY_TEST_S3_TLS_ENDPOINT=%s\n' "$tls_endpoint"
    printf 'export FERRY_TEST_S3_TLS_CA=%s\n' "$tls_dir/ca.pem"
    printf 'export FERRY_TEST_S3_TLS_OTHER_CA=%s\n' "$tls_dir/other-ca.pem"
  } >"$state/s3.env"
  echo "$endpoint"
}

stop() {
  halt "$pidfile"
  halt "$auth_pidfile"
  halt "$tls_pidfile"
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
