#!/usr/bin/env bash
# WebSocket through an mTLS terminator: twoway proxy (HTTP mode) vs nginx, side by side in
# one run, both in front of the same plaintext WebSocket echo backend on loopback, with the
# same certificates. Two loads, each SECS seconds:
#   messages: CONNS connections × WINDOW messages of SMALL bytes in flight (messages/s)
#   bulk:     BULK_CONNS connections × BULK_WINDOW messages of BIG bytes (MB/s echoed)
#
#   bench/proxy/ws.sh                         # SECS=5 CONNS=64 WINDOW=64 SMALL=64
#                                             # BULK_CONNS=4 BULK_WINDOW=4 BIG=262144
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/proxy/ws.sh   # reuse built binaries
#
# Pinning as in run.sh: the terminator on core 0 (one worker/thread), the load generator and
# the backend (twoway-loadgen wsecho) on core 1. TLS 1.3, ECDSA P-256, client certificate
# required and verified, no resumption. Server CPU time is read from /proc. Prints a
# markdown table with ratios to nginx; raw lines go to $OUT/raw.txt.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

SECS=${SECS:-5}
CONNS=${CONNS:-64}
WINDOW=${WINDOW:-64}
SMALL=${SMALL:-64}
BULK_CONNS=${BULK_CONNS:-4}
BULK_WINDOW=${BULK_WINDOW:-4}
BIG=${BIG:-262144}
PEERS=${PEERS:-twoway nginx}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-bench-ws.XXXXXX)}
BACKEND_PORT=18090

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need nginx nginx; need openssl openssl; need taskset util-linux

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-loadgen)
fi
TWOWAY=${TWOWAY:-$TARGET/release/twoway}
LOADGEN=${LOADGEN:-$TARGET/release/twoway-loadgen}

mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ---- certificates (ECDSA P-256) --------------------------------------------------------
. "$ROOT/bench/proxy/lib.sh"
bench_certs
mkdir -p logs

# ---- backend: the WebSocket echo server on core 1 --------------------------------------
if (exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT) 2>/dev/null; then
  echo "port $BACKEND_PORT is already taken: stop whatever listens there" >&2; exit 1
fi
taskset -c 1 "$LOADGEN" wsecho 127.0.0.1:$BACKEND_PORT 2> logs/wsecho.err &
PIDS+=($!)

# ---- terminators ----------------------------------------------------------------------
cat > nginx-ws.conf <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $OUT/logs/nginx-ws.err warn; pid $OUT/nginx-ws.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $OUT/n1; proxy_temp_path $OUT/n2; fastcgi_temp_path $OUT/n3;
  uwsgi_temp_path $OUT/n4; scgi_temp_path $OUT/n5;
  server {
    listen 127.0.0.1:18454 ssl backlog=4096;
    ssl_certificate $OUT/server.pem; ssl_certificate_key $OUT/server.key;
    ssl_client_certificate $OUT/ca.pem; ssl_verify_client on;
    ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / {
      proxy_pass http://127.0.0.1:$BACKEND_PORT;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }
  }
}
CONF

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu_secs() { awk '{printf "%.3f", ($14+$15)/100}' "/proc/$1/stat"; }
LG() { taskset -c 1 "$LOADGEN" "$@" --ca ca.pem --cert client.pem --key client.key --verify-server; }
per_cpu() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{ if (b>a) printf "%.0f", n/(b-a); else print "n/a"}'; }
val() { sed -n "s/.*[ ^]$1=\([0-9.]*\).*/\1/p"; }

wait_port $BACKEND_PORT
declare -A MSG MSGCPU MBS MBSCPU LOAD
start_peer() {
  case $1 in
    twoway) port=18453
      RUST_LOG=warn taskset -c 0 "$TWOWAY" proxy server --listen 127.0.0.1:$port \
        --backend 127.0.0.1:$BACKEND_PORT --cert server.pem --key server.key --client-ca ca.pem \
        --http --workers 1 2> logs/twoway.err & ;;
    nginx) port=18454; taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx-ws.conf" -e "$OUT/logs/nginx-ws.err" & ;;
  esac
  pid=$!
}

for peer in $PEERS; do
  start_peer $peer
  PIDS+=($pid)
  wait_port $port
  addr=127.0.0.1:$port
  echo "== $peer (pid $pid)" >&2
  LOAD[$peer]=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_secs $pid)
  m=$(LG ws $addr --path /ws --conns "$CONNS" --streams "$WINDOW" --size "$SMALL" --secs "$SECS"); echo "$peer $m" >> raw.txt
  c1=$(cpu_secs $pid)
  MSG[$peer]=$(echo " $m" | val messages_per_sec)
  MSGCPU[$peer]=$(per_cpu "$(echo " $m" | val messages)" "$c0" "$c1")
  c0=$(cpu_secs $pid)
  b=$(LG ws $addr --path /ws --conns "$BULK_CONNS" --streams "$BULK_WINDOW" --size "$BIG" --secs "$SECS"); echo "$peer $b" >> raw.txt
  c1=$(cpu_secs $pid)
  MBS[$peer]=$(echo " $b" | val mb_per_sec)
  mb=$(awk -v r="${MBS[$peer]}" -v s="$SECS" 'BEGIN{printf "%.0f", r*s}')
  MBSCPU[$peer]=$(per_cpu "$mb" "$c0" "$c1")
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  sleep 1
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0>0 && b+0>0) printf "%.2f×", a/b; else print "n/a"}'; }
{
  echo "| peer | WebSocket messages/s ($CONNS conns × $WINDOW × $SMALL B) | per server CPU-s | WebSocket MB/s ($BULK_CONNS conns × $BULK_WINDOW × $BIG B) | MB per server CPU-s | load avg |"
  echo "|---|---|---|---|---|---|"
  for peer in $PEERS; do
    echo "| $peer | ${MSG[$peer]} ($(ratio "${MSG[$peer]}" "${MSG[nginx]:-0}")) | ${MSGCPU[$peer]} ($(ratio "${MSGCPU[$peer]}" "${MSGCPU[nginx]:-0}")) | ${MBS[$peer]} ($(ratio "${MBS[$peer]}" "${MBS[nginx]:-0}")) | ${MBSCPU[$peer]} ($(ratio "${MBSCPU[$peer]}" "${MBSCPU[nginx]:-0}")) | ${LOAD[$peer]} |"
  done
} | tee table.md
echo "raw results: $OUT/raw.txt" >&2
