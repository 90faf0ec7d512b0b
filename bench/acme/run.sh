#!/usr/bin/env bash
# ACME benchmark: complete orders per second, twoway next to Pebble, in one run.
#
#   bench/acme/run.sh                          # --clients 64 --seconds 10, SQLite + Pebble (4 clients)
#   bench/acme/run.sh --clients 128 --seconds 20
#   PEERS="twoway-sqlite twoway-postgres pebble" bench/acme/run.sh
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/acme/run.sh   # reuse built binaries
#
# The load generator (bench/acmeload) runs N clients, each on one kept-alive TLS
# connection with its own ES256 account: newAccount once, then whole orders for one
# unique DNS name each (newOrder → authorization → http-01 challenge → poll while pending →
# finalize with a CSR → poll while processing → certificate download). Its own HTTP server
# on 127.0.0.1:$PORT_HTTP01 answers every http-01 validation. Only orders completed within
# the window whose chain parses count.
#   - twoway ca serve, inventory in SQLite (WAL, synchronous=FULL for certificates) in a
#     temp dir, directory "bench" with http01_port/validation_address pointing at the load
#     generator; every certificate is committed before it is answered;
#   - twoway ca serve on a fresh PostgreSQL database (127.0.0.1:5432, user postgres) when
#     PEERS names twoway-postgres;
#   - Debian's pebble with PEBBLE_CLIENTS clients (default 4: pebble 2.4 stops answering
#     for good within seconds at 8 or more concurrent clients here), in memory,
#     PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0, its TLS certificate issued by the
#     same test CA, its httpPort the load generator's, names resolved to 127.0.0.1 by
#     pebble-challtestsrv (counted in Pebble's CPU).
# Server and load generator share both cores (nothing pinned): orders/s is for the whole
# machine. CPU seconds of server and load generator over the window are read from /proc.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

CLIENTS=${CLIENTS:-64}
SECS=${SECS:-10}
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
PEERS=${PEERS:-twoway-sqlite pebble}
PEBBLE_CLIENTS=${PEBBLE_CLIENTS:-4}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-acme-bench.XXXXXX)}
PORT_TW=19543 PORT_TW_HTTP=19580 PORT_PEBBLE=19400 PORT_PEBBLE_MGMT=19401 PORT_DNS=19453
PORT_HTTP01=19502

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need pebble pebble; need pebble-challtestsrv pebble; need ss iproute2; need psql postgresql-client; need curl curl

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-acmeload)
fi
TWOWAY=$TARGET/release/twoway
LOAD=$TARGET/release/twoway-acmeload

mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "$PG_DB" ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

for p in $PORT_TW $PORT_TW_HTTP $PORT_PEBBLE $PORT_PEBBLE_MGMT $PORT_HTTP01; do
  if [ -n "$(ss -Hltn "sport = :$p")" ]; then
    echo "port $p is already taken: stop whatever listens there" >&2; exit 1
  fi
done
wait_port() { for _ in $(seq 1 600); do [ -n "$(ss -Hltn "sport = :$1")" ] && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
stop() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
val() { sed -n "s/.*[ ^]$1=\([0-9.]*\).*/\1/p" | head -1; }
mkdir -p logs

# ---- the test CA, an ACME directory whose validations reach the load generator --------
tw() { RUST_LOG=warn "$TWOWAY" "$@" --ca-dir "$OUT/ca"; }
tw ca init --name "Bench" >/dev/null
cat >> ca/ca.toml <<CONF

[[acme.directory]]
name = "bench"
allow = ["*.bench.test"]
cert_ttl = "24h"
http01_port = $PORT_HTTP01
validation_address = "127.0.0.1"
CONF
tw cert issue --profile server --san DNS:localhost --san IP:127.0.0.1 --out pebble-tls >/dev/null

serve_twoway() {
  RUST_LOG=warn "$TWOWAY" ca serve --ca-dir "$OUT/ca" \
    --listen 127.0.0.1:$PORT_TW --http-listen 127.0.0.1:$PORT_TW_HTTP >"logs/$1.log" 2>&1 &
  PIDS+=($!)
  wait_port $PORT_TW
}

load() { # name clients directory-url pids…
  local name=$1 clients=$2 url=$3; shift 3
  local pids; pids=$(IFS=,; echo "$*")
  echo "== $name: $clients clients, ${SECS}s" >&2
  "$LOAD" --directory "$url" --ca-file "$OUT/ca/root.pem" --http01 127.0.0.1:$PORT_HTTP01 \
    --suffix bench.test --clients "$clients" --seconds "$SECS" --server-pid "$pids" \
    2> "logs/load-$name.err" | tee "logs/load-$name.txt" >&2
  head -5 "logs/load-$name.err" >&2 || true
  echo "$name clients=$clients $(cat "logs/load-$name.txt")" >> raw.txt
  case "$name" in
    twoway*) # how the store work was batched (whole run, registrations included)
      curl -s -m 5 "http://127.0.0.1:$PORT_TW_HTTP/metrics" > "logs/metrics-$name.txt" || true
      m() { sed -n "s/^$1 //p" "logs/metrics-$name.txt"; }
      echo "$name $(m twoway_ca_acme_store_jobs_total) $(m twoway_ca_acme_store_batches_total) $(m twoway_ca_issuance_committed_total) $(m twoway_ca_issuance_commits_total)" >> batching.txt ;;
  esac
}

: > raw.txt; : > batching.txt
for peer in $PEERS; do
  case "$peer" in
    twoway-sqlite)
      serve_twoway "$peer"; pid=${PIDS[-1]}
      load "$peer" "$CLIENTS" "https://127.0.0.1:$PORT_TW/acme/bench/directory" "$pid"
      stop "$pid" ;;
    twoway-postgres)
      PG_DB="twoway_acme_bench_$$"
      psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
      url="postgres://postgres@127.0.0.1:5432/$PG_DB"
      sed -i "s|^# database = .*|database = \"$url\"|" ca/ca.toml
      serve_twoway "$peer"; pid=${PIDS[-1]}
      load "$peer" "$CLIENTS" "https://127.0.0.1:$PORT_TW/acme/bench/directory" "$pid" \
        $(pgrep -f "postgres: postgres $PG_DB" | tr '\n' ' ')
      stop "$pid"
      sed -i "s|^database = \"postgres.*|# database = \"postgres://twoway@db.example.internal:5432/twoway\"|" ca/ca.toml ;;
    pebble)
      cat > pebble.json <<CONF
{"pebble": {"listenAddress": "127.0.0.1:$PORT_PEBBLE",
  "managementListenAddress": "127.0.0.1:$PORT_PEBBLE_MGMT",
  "certificate": "$OUT/pebble-tls/chain.pem", "privateKey": "$OUT/pebble-tls/key.pem",
  "httpPort": $PORT_HTTP01, "tlsPort": 19501, "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
CONF
      pebble-challtestsrv -dns01 127.0.0.1:$PORT_DNS -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        -http01 "" -https01 "" -tlsalpn01 "" -management 127.0.0.1:19455 \
        >logs/challtestsrv.log 2>&1 &
      PIDS+=($!); dns=$!
      PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json \
        -dnsserver 127.0.0.1:$PORT_DNS >logs/pebble.log 2>&1 &
      PIDS+=($!); pid=$!
      wait_port $PORT_PEBBLE
      load "$peer" "$PEBBLE_CLIENTS" "https://127.0.0.1:$PORT_PEBBLE/dir" "$pid" "$dns"
      stop "$pid"; stop "$dns" ;;
    *) echo "unknown peer $peer" >&2; exit 64 ;;
  esac
  sleep 1
done

echo
echo "ACME: complete orders (newOrder → http-01 → finalize → certificate), ${SECS}s, server and load generator on the same $(nproc) cores"
echo
echo "| server | clients | orders/s | p50 ms | p99 ms | requests/order | errors | server CPU-s | load gen CPU-s | server CPU-ms/order | load gen CPU-ms/order | vs Pebble |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
peb=$(grep '^pebble ' raw.txt | val rate || true)
while read -r name line; do
  rate=$(echo " $line" | val rate)
  ratio=$(awk -v a="$rate" -v b="${peb:-0}" 'BEGIN{ if (b>0) printf "%.1f×", a/b; else print "n/a"}')
  orders=$(echo " $line" | val orders); scpu=$(echo " $line" | val server_cpu_s); lcpu=$(echo " $line" | val loadgen_cpu_s)
  per() { awk -v c="$1" -v n="$orders" 'BEGIN{ if (n>0) printf "%.2f", c*1000/n; else print "n/a"}'; }
  echo "| $name | $(echo " $line" | val clients) | $rate | $(echo " $line" | val p50_ms) | $(echo " $line" | val p99_ms) | $(echo " $line" | val reqs_per_order) | $(echo " $line" | val errors) | $scpu | $lcpu | $(per "$scpu") | $(per "$lcpu") | $ratio |"
done < raw.txt
echo
while read -r name jobs batches certs commits; do
  [ -n "$batches" ] && [ "$batches" -gt 0 ] || continue
  awk -v n="$name" -v j="$jobs" -v b="$batches" -v c="$certs" -v k="$commits" 'BEGIN{
    printf "%s: %d ACME store jobs in %d transactions (%.1f per transaction); %d certificates in %d durable commits (%.1f per commit)\n",
      n, j, b, j/b, c, k, (k > 0 ? c/k : 0) }'
done < batching.txt
echo "raw: $OUT/raw.txt" >&2
