#!/usr/bin/env bash
# Side-by-side mTLS terminator benchmark: twoway proxy vs nginx, HAProxy and stunnel, all in
# front of the same plaintext nginx backend on loopback, with the same certificates.
#
#   bench/proxy/run.sh            # SECS=5 per measurement, IDLE_CONNS=1000, CONNS=32, HS_CONNS=64,
#                                 # H2_CONNS=8 x H2_STREAMS=8 HTTP/2 streams in flight
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/proxy/run.sh   # reuse built binaries
#   PEERS="twoway nginx" bench/proxy/run.sh                  # only some terminators
#   (peers: twoway nginx nginx-tickets haproxy stunnel; ratios are to `nginx`)
#
# Pinning: the terminator under test on core 0 (one worker/thread), the load generator and
# the backend on core 1. TLS 1.3 only, ECDSA P-256 certificates, client certificate required
# and verified, session tickets/resumption off everywhere (the load generator never resumes)
# except the `nginx-tickets` peer, which is nginx with its default ticket policy,
# X25519 offered by the load generator. Server CPU time is read from /proc for every test.
# The load generator does the full work of a real client (verifies the server's certificate
# and CertificateVerify, offers rustls' default key exchanges, X25519MLKEM768 first) in every
# test but the handshake rate, where it stays lean (X25519, no server check) so that its own
# CPU on core 1 does not cap the terminator: CLIENT="" makes every test lean, as before.
# Prints a markdown table with ratios to nginx; raw lines go to $OUT/raw.txt.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

SECS=${SECS:-5}
IDLE_CONNS=${IDLE_CONNS:-1000}
CONNS=${CONNS:-32}
HS_CONNS=${HS_CONNS:-64}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-8}
CLIENT=${CLIENT---real-client}
PEERS=${PEERS:-twoway nginx nginx-tickets haproxy stunnel}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-bench.XXXXXX)}
BACKEND_PORT=18080

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need nginx nginx; need haproxy haproxy; need stunnel4 stunnel4; need openssl openssl; need taskset util-linux

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-loadgen)
fi
TWOWAY=$TARGET/release/twoway
LOADGEN=$TARGET/release/twoway-loadgen

mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ---- certificates (ECDSA P-256) --------------------------------------------------------
. "$ROOT/bench/proxy/lib.sh"
bench_certs
cat server.pem server.key > server-combined.pem
truncate -s 1G big.bin
mkdir -p logs

# ---- backend: plaintext nginx on core 1 -----------------------------------------------
if (exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT) 2>/dev/null; then
  echo "port $BACKEND_PORT is already taken: stop whatever listens there" >&2; exit 1
fi
cat > backend.conf <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $OUT/logs/backend.err warn; pid $OUT/backend.pid;
events { worker_connections 8192; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path $OUT/b1; proxy_temp_path $OUT/b2; fastcgi_temp_path $OUT/b3;
  uwsgi_temp_path $OUT/b4; scgi_temp_path $OUT/b5;
  server {
    listen 127.0.0.1:$BACKEND_PORT backlog=4096;
    root $OUT;
    location = /big { try_files /big.bin =404; }
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
CONF
taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -e "$OUT/logs/backend.err" &
PIDS+=($!)

# ---- terminators ----------------------------------------------------------------------
cat > nginx-tls.conf <<CONF
daemon off; master_process off; worker_processes 1; user root;
error_log $OUT/logs/nginx-tls.err warn; pid $OUT/nginx-tls.pid;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/n1; proxy_temp_path $OUT/n2; fastcgi_temp_path $OUT/n3;
  uwsgi_temp_path $OUT/n4; scgi_temp_path $OUT/n5;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:18444 ssl http2 backlog=4096;
    ssl_certificate $OUT/server.pem; ssl_certificate_key $OUT/server.key;
    ssl_client_certificate $OUT/ca.pem; ssl_verify_client on;
    ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
CONF
# The same nginx with its default ticket policy (session tickets on: every full handshake
# also issues a ticket, which the load generator never uses).
sed -e 's/ssl_session_tickets off; ssl_session_cache off;//' -e 's/18444/18447/' \
  -e 's/nginx-tls\.err/nginx-tickets.err/' -e 's/nginx-tls\.pid/nginx-tickets.pid/' \
  nginx-tls.conf > nginx-tickets.conf
cat > haproxy.cfg <<CONF
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:18445 ssl crt $OUT/server-combined.pem ca-file $OUT/ca.pem verify required alpn h2,http/1.1
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BACKEND_PORT
CONF
cat > stunnel.conf <<CONF
foreground = yes
pid =
[tls]
accept = 127.0.0.1:18446
connect = 127.0.0.1:$BACKEND_PORT
cert = $OUT/server.pem
key = $OUT/server.key
CAfile = $OUT/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
options = NO_TICKET
CONF

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu_secs() { awk '{printf "%.3f", ($14+$15)/100}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
LG() { taskset -c 1 "$LOADGEN" "$@" --ca ca.pem --cert client.pem --key client.key; }
per_cpu() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{ if (b>a) printf "%.0f", n/(b-a); else print "n/a"}'; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

wait_port $BACKEND_PORT
declare -A HS HSCPU RPS RPSCPU P50 P99 MBS MBSCPU KIB LOAD H2 H2CPU H2P99
# start_peer NAME: starts the terminator on core 0; sets $pid and $port
start_peer() {
  case $1 in
    twoway) port=18443
      RUST_LOG=warn taskset -c 0 "$TWOWAY" proxy server --listen 127.0.0.1:$port \
        --backend 127.0.0.1:$BACKEND_PORT --cert server.pem --key server.key --client-ca ca.pem \
        --http --workers 1 --max-connections 20000 --max-connections-per-address 20000 2> logs/twoway.err & ;;
    nginx) port=18444; taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx-tls.conf" -e "$OUT/logs/nginx-tls.err" & ;;
    nginx-tickets) port=18447; taskset -c 0 nginx -p "$OUT" -c "$OUT/nginx-tickets.conf" -e "$OUT/logs/nginx-tickets.err" & ;;
    haproxy) port=18445; taskset -c 0 haproxy -db -f haproxy.cfg 2> logs/haproxy.err & ;;
    stunnel) port=18446; taskset -c 0 stunnel4 stunnel.conf 2> logs/stunnel.err & ;;
  esac
  pid=$!
}

# idle_kib MODE: RSS growth per connection of $pid with $IDLE_CONNS idle connections of MODE
idle_kib() {
  LG keepalive $addr --conns 1 --secs 0.5 $CLIENT >/dev/null
  local rss0 rss1 lg
  rss0=$(rss_kib $pid)
  LG "$1" $addr --conns "$IDLE_CONNS" --secs 6 $CLIENT > idle.out & lg=$!
  for _ in $(seq 1 100); do grep -q idle_conns idle.out 2>/dev/null && break; sleep 0.1; done
  sleep 1
  rss1=$(rss_kib $pid)
  wait $lg || true
  awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_CONNS" 'BEGIN{printf "%.1f", (b-a)/n}'
}

for peer in $PEERS; do
  start_peer $peer
  PIDS+=($pid)
  wait_port $port
  addr=127.0.0.1:$port
  echo "== $peer (pid $pid)" >&2
  KIB[$peer]=$(idle_kib idle)
  sleep 1
  c0=$(cpu_secs $pid)
  LOAD[$peer]=$(cut -d' ' -f1 /proc/loadavg)
  hs=$(LG handshake $addr --conns "$HS_CONNS" --secs "$SECS"); echo "$peer $hs" >> raw.txt
  c1=$(cpu_secs $pid)
  HS[$peer]=$(echo "$hs" | val handshakes_per_sec)
  n=$(echo "$hs" | val 'handshakes')
  HSCPU[$peer]=$(per_cpu "$n" "$c0" "$c1")
  c0=$(cpu_secs $pid)
  ka=$(LG keepalive $addr --conns $CONNS --secs "$SECS" $CLIENT); echo "$peer $ka" >> raw.txt
  c1=$(cpu_secs $pid)
  RPS[$peer]=$(echo "$ka" | val requests_per_sec); P50[$peer]=$(echo "$ka" | val p50_us); P99[$peer]=$(echo "$ka" | val p99_us)
  RPSCPU[$peer]=$(per_cpu "$(echo "$ka" | val 'requests')" "$c0" "$c1")
  if [ "$peer" = stunnel ]; then
    H2[$peer]=n/a; H2CPU[$peer]=n/a; H2P99[$peer]=n/a  # a TCP relay: no HTTP/2 of its own
  else
    c0=$(cpu_secs $pid)
    h2=$(LG h2 $addr --conns "$H2_CONNS" --streams "$H2_STREAMS" --secs "$SECS" $CLIENT); echo "$peer h2 $h2" >> raw.txt
    c1=$(cpu_secs $pid)
    H2[$peer]=$(echo "$h2" | val requests_per_sec); H2P99[$peer]=$(echo "$h2" | val p99_us)
    H2CPU[$peer]=$(per_cpu "$(echo "$h2" | val 'requests')" "$c0" "$c1")
  fi
  c0=$(cpu_secs $pid)
  bk=$(LG bulk $addr --path /big --secs "$SECS" $CLIENT); echo "$peer $bk" >> raw.txt
  c1=$(cpu_secs $pid)
  MBS[$peer]=$(echo "$bk" | val mb_per_sec)
  MBSCPU[$peer]=$(per_cpu "$(awk -v b="$(echo "$bk" | val 'bytes')" 'BEGIN{printf "%.0f", b/1e6}')" "$c0" "$c1")
  echo "$peer idle_kib_per_conn=${KIB[$peer]} handshakes_per_server_cpu_sec=${HSCPU[$peer]} requests_per_server_cpu_sec=${RPSCPU[$peer]} h2_requests_per_server_cpu_sec=${H2CPU[$peer]} mb_per_server_cpu_sec=${MBSCPU[$peer]} loadavg=${LOAD[$peer]}" >> raw.txt
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  sleep 1
done

# Memory per idle HTTP/2 connection, each terminator started afresh (RSS that a previous
# test freed would be reused and hide the cost).
declare -A H2KIB
for peer in $PEERS; do
  if [ "$peer" = stunnel ]; then H2KIB[$peer]=n/a; continue; fi
  start_peer $peer
  PIDS+=($pid)
  wait_port $port
  addr=127.0.0.1:$port
  H2KIB[$peer]=$(idle_kib h2idle)
  echo "$peer h2_idle_kib_per_conn=${H2KIB[$peer]}" >> raw.txt
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  sleep 1
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0>0 && b+0>0) printf "%.2f×", a/b; else print "n/a"}'; }
{
  echo "client: ${CLIENT:-lean} (handshakes: lean)"
  echo
  echo "| peer | full mTLS handshakes/s | per server CPU-s | keep-alive req/s ($CONNS conns) | per server CPU-s | p50 | p99 | h2 req/s ($H2_CONNS conns × $H2_STREAMS streams) | per server CPU-s | h2 p99 | bulk MB/s | per server CPU-s | KiB per idle conn ($IDLE_CONNS) | KiB per idle h2 conn | load avg |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for peer in $PEERS; do
    echo "| $peer | ${HS[$peer]} ($(ratio "${HS[$peer]}" "${HS[nginx]:-0}")) | ${HSCPU[$peer]} ($(ratio "${HSCPU[$peer]}" "${HSCPU[nginx]:-0}")) | ${RPS[$peer]} ($(ratio "${RPS[$peer]}" "${RPS[nginx]:-0}")) | ${RPSCPU[$peer]} ($(ratio "${RPSCPU[$peer]}" "${RPSCPU[nginx]:-0}")) | ${P50[$peer]} µs | ${P99[$peer]} µs | ${H2[$peer]} ($(ratio "${H2[$peer]}" "${H2[nginx]:-0}")) | ${H2CPU[$peer]} ($(ratio "${H2CPU[$peer]}" "${H2CPU[nginx]:-0}")) | ${H2P99[$peer]} µs | ${MBS[$peer]} ($(ratio "${MBS[$peer]}" "${MBS[nginx]:-0}")) | ${MBSCPU[$peer]} ($(ratio "${MBSCPU[$peer]}" "${MBSCPU[nginx]:-0}")) | ${KIB[$peer]} ($(ratio "${KIB[$peer]}" "${KIB[nginx]:-0}")) | ${H2KIB[$peer]} ($(ratio "${H2KIB[$peer]}" "${H2KIB[nginx]:-0}")) | ${LOAD[$peer]} |"
  done
} | tee table.md
echo "raw results: $OUT/raw.txt" >&2
