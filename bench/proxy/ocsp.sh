#!/usr/bin/env bash
# OCSP cost benchmark: full mTLS handshakes per second through `twoway proxy server` with
# OCSP checking on (the cache warm: one client certificate, its good answer fetched once
# from an `openssl ocsp -port` responder) against the same proxy with OCSP off, alternated
# ROUNDS times in one run so that both see the same machine load.
#
#   bench/proxy/ocsp.sh                      # SECS=5 per measurement, ROUNDS=3, HS_CONNS=64
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/proxy/ocsp.sh
#
# Pinning as in bench/proxy/run.sh: the proxy on core 0 (one worker), the load generator
# (lean client: X25519, no server check, no resumption) and the responder on core 1.
# Prints one line per measurement and the ratios of the medians, of handshakes/s and of
# handshakes per server CPU-second (target ≥ 0.9; on a shared machine the second is steadier).
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
HS_CONNS=${HS_CONNS:-64}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-ocsp-bench.XXXXXX)}
BACKEND_PORT=${BACKEND_PORT:-28090}
OCSP_PORT=${OCSP_PORT:-28091}
PORT=${PORT:-28492}

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need nginx nginx; need openssl openssl; need taskset util-linux

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-loadgen)
fi
TWOWAY=$TARGET/release/twoway
LOADGEN=$TARGET/release/twoway-loadgen

mkdir -p "$OUT/logs"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

. "$ROOT/bench/proxy/lib.sh"
bench_certs "authorityInfoAccess=OCSP;URI:http://127.0.0.1:$OCSP_PORT"
leaf responder "/CN=bench OCSP" "extendedKeyUsage=OCSPSigning
keyUsage=critical,digitalSignature
basicConstraints=CA:FALSE"
serial=$(openssl x509 -in client.pem -noout -serial | cut -d= -f2)
printf 'V\t491231235959Z\t\t%s\tunknown\t/CN=loadgen\n' "$serial" > index.txt

for p in $BACKEND_PORT $OCSP_PORT $PORT 28493; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already taken: stop whatever listens there" >&2; exit 1; fi
done
cat > backend.conf <<CONF
daemon off; master_process off; worker_processes 1; pid $OUT/backend.pid;
error_log $OUT/logs/backend.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "ok\n"; } } }
CONF
taskset -c 1 nginx -p "$OUT" -c "$OUT/backend.conf" -e "$OUT/logs/backend.err" & PIDS+=($!)
taskset -c 1 openssl ocsp -index index.txt -port $OCSP_PORT -CA ca.pem -rsigner responder.pem \
  -rkey responder.key -ndays 1 2> logs/ocsp.err > logs/ocsp.out & PIDS+=($!)

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
cpu_secs() { awk '{printf "%.3f", ($14+$15)/100}' "/proc/$1/stat"; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
LG() { taskset -c 1 "$LOADGEN" "$@" --ca ca.pem --cert client.pem --key client.key; }
wait_port $BACKEND_PORT
# no probe of the responder's port: OpenSSL 3.0's responder hangs on a connection closed
# without a request; it says when it listens
for _ in $(seq 1 200); do grep -q "waiting for OCSP" logs/ocsp.err logs/ocsp.out 2>/dev/null && break; sleep 0.05; done

declare -a ON OFF ONCPU OFFCPU
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    extra=()
    [ "$mode" = on ] && extra=(--ocsp --admin 127.0.0.1:28493)
    RUST_LOG=warn taskset -c 0 "$TWOWAY" proxy server --listen 127.0.0.1:$PORT \
      --backend 127.0.0.1:$BACKEND_PORT --cert server.pem --key server.key --client-ca ca.pem \
      --http --workers 1 --max-connections 20000 --max-connections-per-address 20000 \
      "${extra[@]}" 2> "logs/twoway-$mode-$round.err" &
    pid=$!; PIDS+=($pid)
    wait_port $PORT
    LG keepalive 127.0.0.1:$PORT --conns 1 --secs 0.5 >/dev/null   # warms the OCSP cache
    c0=$(cpu_secs $pid)
    hs=$(LG handshake 127.0.0.1:$PORT --conns "$HS_CONNS" --secs "$SECS")
    c1=$(cpu_secs $pid)
    rate=$(echo "$hs" | val handshakes_per_sec)
    n=$(echo "$hs" | val handshakes)
    cpu=$(awk -v n="$n" -v a="$c0" -v b="$c1" 'BEGIN{ if (b>a) printf "%.0f", n/(b-a); else print "n/a"}')
    echo "round=$round ocsp=$mode handshakes_per_sec=$rate per_server_cpu_sec=$cpu $hs"
    if [ "$mode" = on ]; then  # the answers the proxy got: one good, nothing else
      curl -s http://127.0.0.1:28493/metrics | grep -E '^twoway_proxy_ocsp_answers_total.*(good|failed)|result="ok"' | tr '\n' ' '; echo
    fi
    if [ "$mode" = on ]; then ON+=("$rate"); ONCPU+=("$cpu"); else OFF+=("$rate"); OFFCPU+=("$cpu"); fi
    kill $pid; wait $pid 2>/dev/null || true
    sleep 0.5
  done
done
grep -h "OCSP" logs/twoway-on-*.err | head -3 || true
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
on=$(median "${ON[@]}"); off=$(median "${OFF[@]}")
awk -v on="$on" -v off="$off" 'BEGIN{printf "median handshakes/s: ocsp on %.0f, off %.0f, ratio %.3f\n", on, off, on/off}'
on=$(median "${ONCPU[@]}"); off=$(median "${OFFCPU[@]}")
awk -v on="$on" -v off="$off" 'BEGIN{printf "median handshakes per server CPU-s: ocsp on %.0f, off %.0f, ratio %.3f\n", on, off, on/off}'
