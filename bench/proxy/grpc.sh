#!/usr/bin/env bash
# gRPC through an mTLS terminator: twoway proxy (`--backend-protocol h2c`) vs nginx
# (`grpc_pass`, needs nginx-full or nginx-core: nginx-light has no gRPC module), in the same
# run, in front of the same h2c backend (bench/grpc-backend, hyper, echoes each message with
# `grpc-status: 0`), with the same ECDSA P-256 certificates (client certificate required).
#
#   bench/proxy/grpc.sh           # SECS=5, CONNS=8 kept-alive h2 connections x STREAMS=8
#                                 # calls in flight, PAYLOAD=100 bytes per message, ROUNDS=2
#   SKIP_BUILD=1 bench/proxy/grpc.sh
#
# The load generator (bench/loadgen `grpc` mode: h2 over mTLS with ALPN h2, POSTs with
# content-type application/grpc, te: trailers and one length-prefixed message; a call counts
# once its trailers said grpc-status 0) is used instead of h2load, which cannot present a
# client certificate. Pinning: the terminator on core 0 (one worker), the load generator
# and the backend on core 1. Server CPU time from /proc. Peers alternate within each round.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

SECS=${SECS:-5}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-8}
PAYLOAD=${PAYLOAD:-100}
ROUNDS=${ROUNDS:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-grpc-bench.XXXXXX)}
BACKEND_PORT=18090

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need nginx nginx-full; need openssl openssl; need taskset util-linux

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-loadgen -p twoway-grpc-backend)
fi
TWOWAY=$TARGET/release/twoway
LOADGEN=$TARGET/release/twoway-loadgen
BACKEND=$TARGET/release/twoway-grpc-backend

mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

. "$ROOT/bench/proxy/lib.sh"
bench_certs
mkdir -p logs

if (exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT) 2>/dev/null; then
  echo "port $BACKEND_PORT is already taken: stop whatever listens there" >&2; exit 1
fi
taskset -c 1 "$BACKEND" 127.0.0.1:$BACKEND_PORT 1 &
PIDS+=($!)

cat > nginx-grpc.conf <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $OUT/logs/nginx-grpc.err warn; pid $OUT/nginx-grpc.pid;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/n1; proxy_temp_path $OUT/n2; fastcgi_temp_path $OUT/n3;
  uwsgi_temp_path $OUT/n4; scgi_temp_path $OUT/n5;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:18454 ssl http2 backlog=4096;
    ssl_certificate $OUT/server.pem; ssl_certificate_key $OUT/server.key;
    ssl_client_certificate $OUT/ca.pem; ssl_verify_client on;
    ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { grpc_pass grpc://backend; grpc_set_header X-Client-Cert \$ssl_client_s_dn; }
  }
}
CONF

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu_secs() { awk '{printf "%.3f", ($14+$15)/100}' "/proc/$1/stat"; }
LG() { taskset -c 1 "$LOADGEN" "$@" --ca ca.pem --cert client.pem --key client.key; }
per_cpu() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{ if (b>a) printf "%.0f", n/(b-a); else print "n/a"}'; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

wait_port $BACKEND_PORT
start_peer() {
  case $1 in
    twoway) port=18453
      RUST_LOG=warn taskset -c 0 "$TWOWAY" proxy server --listen 127.0.0.1:$port \
        --backend 127.0.0.1:$BACKEND_PORT --http --backend-protocol h2c \
        --cert server.pem --key server.key --client-ca ca.pem --workers 1 2> logs/twoway.err & ;;
    nginx) port=18454; taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx-grpc.conf" -e "$OUT/logs/nginx-grpc.err" & ;;
  esac
  pid=$!
}

{
  echo "| round | peer | gRPC calls/s ($CONNS conns × $STREAMS streams, $PAYLOAD B) | per server CPU-s | p50 | p99 | errors | load avg |"
  echo "|---|---|---|---|---|---|---|---|"
} > table.md
for round in $(seq 1 "$ROUNDS"); do
  declare -A RPS CPU
  for peer in twoway nginx; do
    start_peer $peer
    PIDS+=($pid)
    wait_port $port
    addr=127.0.0.1:$port
    # warm up: connections, backend keep-alive
    LG grpc $addr --conns "$CONNS" --streams "$STREAMS" --secs 1 --path /bench.Echo/Unary --payload "$PAYLOAD" --real-client >/dev/null
    load=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_secs $pid)
    r=$(LG grpc $addr --conns "$CONNS" --streams "$STREAMS" --secs "$SECS" --path /bench.Echo/Unary --payload "$PAYLOAD" --real-client)
    c1=$(cpu_secs $pid)
    echo "round $round $peer $r" >> raw.txt
    RPS[$peer]=$(echo "$r" | val requests_per_sec)
    CPU[$peer]=$(per_cpu "$(echo "$r" | val 'requests')" "$c0" "$c1")
    echo "| $round | $peer | ${RPS[$peer]} | ${CPU[$peer]} | $(echo "$r" | val p50_us) µs | $(echo "$r" | val p99_us) µs | $(echo "$r" | val errors) | $load |" >> table.md
    kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    sleep 1
  done
  awk -v a="${RPS[twoway]}" -v b="${RPS[nginx]}" -v c="${CPU[twoway]}" -v d="${CPU[nginx]}" -v r="$round" \
    'BEGIN{ if (b>0 && d>0) printf "| %s | twoway / nginx | %.2f× | %.2f× | | | | |\n", r, a/b, c/d }' >> table.md
done
cat table.md
echo "raw results: $OUT/raw.txt" >&2
