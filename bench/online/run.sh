#!/usr/bin/env bash
# Online CA benchmark: issuance over the API and OCSP answers, twoway next to its peers.
#
#   bench/online/run.sh                # SECS=5 per measurement, CONNS=32, N_CSRS=2000
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/online/run.sh   # reuse built binaries
#   PARTS="issuance ocsp" PEERS="twoway-sqlite twoway-postgres cfssl cfssl-db" bench/online/run.sh
#
# Issuance: N_CSRS distinct P-256 CSRs (made once with openssl, reused round-robin) are
# POSTed over CONNS keep-alive mutual-TLS connections for SECS seconds to
#   - twoway ca serve, POST /v1/sign (admin client certificate), inventory in SQLite
#     (WAL, synchronous=FULL) and then in PostgreSQL (a fresh database on 127.0.0.1:5432,
#     user postgres, trust authentication); every answer is a certificate already recorded;
#   - cfssl serve (Debian golang-cfssl), POST /api/v1/cfssl/sign over TLS with a required
#     client certificate, signing with the same intermediate certificate and key, without a
#     certificate database (it records nothing) and with its SQLite certdb (-db-config).
# OCSP: OCSP_REQS request DERs (openssl ocsp -reqout, no nonce) for certificates both
# responders know are POSTed over CONNS keep-alive plain-HTTP connections to
#   - twoway's plain-HTTP listener (/ocsp, pre-signed cached answers, delegated signer);
#   - openssl ocsp -port (signs every answer with the intermediate), -multi 1 and -multi 2.
# A sample answer of each responder is checked with `openssl ocsp` before it is measured.
#
# CA=DIR runs the twoway parts on an existing CA directory (e.g. a large inventory made by
# bench/inventory/run.sh) instead of a new, empty one; this script's admin is added to its
# ca.toml, and what it issues is recorded there:
#   PARTS="issuance ocsp" PEERS=twoway-sqlite OCSP_PEERS=twoway CA=/tmp/inv-10m bench/online/run.sh
#
# Pinning (PIN=1, the default): the server under test on core 0, the load generator
# (bench/loadgen, `post` mode, one thread) on core 1; PostgreSQL is not pinned. PIN=0 pins
# nothing: server, peer, database and load generator share both cores. Server CPU time is
# read from /proc for every test.
# Prints markdown tables with ratios to the peer; raw lines go to $OUT/raw.txt.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true

SECS=${SECS:-5}
CONNS=${CONNS:-32}
N_CSRS=${N_CSRS:-2000}
OCSP_REQS=${OCSP_REQS:-64}
PARTS=${PARTS:-issuance ocsp}
PEERS=${PEERS:-twoway-sqlite twoway-postgres cfssl cfssl-db}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-online-bench.XXXXXX)}
PORT_TW=19443 PORT_TW_HTTP=19080 PORT_CFSSL=19888 PORT_OCSP=19881
PIN=${PIN:-1}
if [ "$PIN" = 1 ]; then SERVER_CORES=0 LOADGEN_CORES=1; else SERVER_CORES=0,1 LOADGEN_CORES=0,1; fi

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install $2" >&2; exit 1; }; }
need openssl openssl; need taskset util-linux; need psql postgresql-client
if [[ " $PARTS " == *" issuance "* && " $PEERS " == *" cfssl"* ]]; then need cfssl golang-cfssl; fi
need sqlite3 sqlite3; need ss iproute2

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-loadgen)
fi
TWOWAY=$TARGET/release/twoway
LOADGEN=$TARGET/release/twoway-loadgen

mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "$PG_DB" ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

for p in $PORT_TW $PORT_TW_HTTP $PORT_CFSSL $PORT_OCSP; do
  if [ -n "$(ss -Hltn "sport = :$p")" ]; then
    echo "port $p is already taken: stop whatever listens there" >&2; exit 1
  fi
done
# Waits for a listening socket without connecting to it: an empty connection stalls
# `openssl ocsp`'s single worker.
wait_port() { for _ in $(seq 1 600); do [ -n "$(ss -Hltn "sport = :$1")" ] && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# CPU seconds of a process and its direct children (openssl ocsp -multi's workers).
cpu_secs() {
  local p t=0
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk -v t="$t" '{printf "%.3f", t + ($14+$15)/100}' "/proc/$p/stat" 2>/dev/null || echo "$t")
  done
  echo "$t"
}
per_cpu() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{ if (b>a) printf "%.0f", n/(b-a); else print "n/a"}'; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.1f×", a/b; else print "n/a"}'; }
# `openssl ocsp` ignores SIGTERM, and -multi forks workers: its children go first, by
# parent pid, then the process itself is killed.
stop() {
  pkill -TERM -P "$1" 2>/dev/null || true; kill "$1" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  pkill -KILL -P "$1" 2>/dev/null || true; kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true; sleep 0.5
}
json_str() { awk 'BEGIN{ORS="\\n"} {gsub(/"/, "\\\""); print}' "$1"; }
mkdir -p logs

# ---- the CA: root + P-256 intermediate, an admin client certificate -------------------
tw() { RUST_LOG=warn "$TWOWAY" "$@" --ca-dir "$OUT/ca"; }
if [ -n "${CA:-}" ]; then
  [ -f "$CA/ca.toml" ] || { echo "CA=$CA has no ca.toml" >&2; exit 64; }
  ln -s "$(cd "$CA" && pwd)" ca
else
  tw ca init --name "Bench" >/dev/null
fi
grep -q 'spiffe://bench.internal/admin' ca/ca.toml ||
  sed -i 's|^admins = \[\]|admins = ["URI:spiffe://bench.internal/admin"]|;t;s|^admins = \[\(..*\)\]$|admins = [\1, "URI:spiffe://bench.internal/admin"]|' ca/ca.toml
grep -q 'spiffe://bench.internal/admin' ca/ca.toml || { echo "could not set [server] admins in ca.toml" >&2; exit 1; }
tw cert issue --profile client --san URI:spiffe://bench.internal/admin --out admin >/dev/null
tw cert issue --profile server --san DNS:localhost --san IP:127.0.0.1 --out tls >/dev/null

# ---- CSRs (distinct P-256 keys), and one body per CSR for each API ---------------------
echo "making $N_CSRS CSRs…" >&2
mkdir -p csr body-twoway body-cfssl
make_csr() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=host-$1.bench.internal" -addext "subjectAltName=DNS:host-$1.bench.internal" \
    -out "csr/$1.csr" 2>/dev/null
}
export -f make_csr
seq -w 1 "$N_CSRS" | xargs -P 2 -I{} bash -c 'make_csr {}'
for f in csr/*.csr; do
  n=$(basename "$f" .csr); pem=$(json_str "$f")
  printf '{"csr":"%s","profile":"server","ttl":"24h"}' "$pem" > "body-twoway/$n.json"
  printf '{"certificate_request":"%s","profile":"server"}' "$pem" > "body-cfssl/$n.json"
done

# ---- cfssl: the same intermediate, a server profile like twoway's ---------------------
cat > cfssl.json <<'CONF'
{"signing": {"default": {"expiry": "24h", "usages": ["digital signature", "server auth"]},
  "profiles": {"server": {"expiry": "24h", "usages": ["digital signature", "server auth"]}}}}
CONF
# cfssl's certdb schema (certdb/sqlite/migrations/001_CreateCertificates.sql of cfssl 1.2)
cat > certdb.sql <<'SQL'
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier));
SQL
sqlite3 certdb.db < certdb.sql
printf '{"driver":"sqlite3","data_source":"%s/certdb.db"}\n' "$OUT" > certdb.json
cat ca/root.pem > client-ca.pem

# later flags win: a caller's --secs (warm-up) overrides the default
LG() { local a=$1; shift; taskset -c "$LOADGEN_CORES" "$LOADGEN" post "$a" --conns "$CONNS" --secs "$SECS" "$@"; }
LG_TLS() { LG "$@" --ca ca/root.pem --cert admin/chain.pem --key admin/key.pem; }
declare -A RPS CPU P50 P99 ERR LOAD NOTE

measure() { # name pid loadgen-args…
  local name=$1 pid=$2; shift 2
  local c0 c1 out
  LOAD[$name]=$(cut -d' ' -f1 /proc/loadavg)
  c0=$(cpu_secs "$pid")
  out=$("$@")
  c1=$(cpu_secs "$pid")
  echo "$name $out" >> raw.txt
  echo "$name $out" >&2
  RPS[$name]=$(echo "$out" | val requests_per_sec)
  P50[$name]=$(echo "$out" | val p50_us); P99[$name]=$(echo "$out" | val p99_us)
  ERR[$name]=$(echo "$out" | val errors)
  CPU[$name]=$(per_cpu "$(echo "$out" | val 'requests')" "$c0" "$c1")
}

serve_twoway() { # extra args…
  RUST_LOG=warn taskset -c "$SERVER_CORES" "$TWOWAY" ca serve --ca-dir "$OUT/ca" \
    --listen 127.0.0.1:$PORT_TW --http-listen 127.0.0.1:$PORT_TW_HTTP "$@" \
    > logs/twoway.out 2> logs/twoway.err &
  PIDS+=($!)
  wait_port $PORT_TW_HTTP
}

count_rows() { tw cert list --json --limit 1 "$@" | sed -n 's/.*"total": *\([0-9]*\).*/\1/p' | head -1; }

if [[ " $PARTS " == *" issuance "* ]]; then
  for peer in $PEERS; do
    echo "== issuance: $peer" >&2
    case $peer in
      twoway-sqlite)
        before=$(count_rows)
        serve_twoway; pid=${PIDS[-1]}
        LG_TLS 127.0.0.1:$PORT_TW --path /v1/sign --bodies body-twoway --content-type application/json --secs 0.5 >/dev/null
        measure $peer "$pid" LG_TLS 127.0.0.1:$PORT_TW --path /v1/sign --bodies body-twoway --content-type application/json
        stop "$pid"
        after=$(count_rows)
        NOTE[$peer]="inventory rows +$((after - before))" ;;
      twoway-postgres)
        PG_DB="twoway_bench_$$"
        psql -q "$PG_ADMIN" -c "CREATE DATABASE $PG_DB" >/dev/null
        url="postgres://postgres@127.0.0.1:5432/$PG_DB"
        # the admin certificate must be in the inventory the server reads
        sed -i "s|^# database = .*|database = \"$url\"|" ca/ca.toml
        tw cert issue --profile client --san URI:spiffe://bench.internal/admin --out admin-pg >/dev/null
        serve_twoway; pid=${PIDS[-1]}
        LGPG() { LG "$@" --ca ca/root.pem --cert admin-pg/chain.pem --key admin-pg/key.pem; }
        LGPG 127.0.0.1:$PORT_TW --path /v1/sign --bodies body-twoway --content-type application/json --secs 0.5 >/dev/null
        measure $peer "$pid" LGPG 127.0.0.1:$PORT_TW --path /v1/sign --bodies body-twoway --content-type application/json
        stop "$pid"
        rows=$(psql -qtA "postgres://postgres@127.0.0.1:5432/$PG_DB" -c "SELECT count(*) FROM certificates")
        NOTE[$peer]="inventory rows $rows"
        sed -i "s|^database = \"postgres.*|# database = \"postgres://twoway@db.example.internal:5432/twoway\"|" ca/ca.toml
        psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
        PG_DB="" ;;
      cfssl|cfssl-db)
        db=(); [ "$peer" = cfssl-db ] && db=(-db-config certdb.json)
        taskset -c "$SERVER_CORES" cfssl serve -address 127.0.0.1 -port $PORT_CFSSL -ca ca/intermediate.pem \
          -ca-key ca/intermediate.key -config cfssl.json -tls-cert tls/chain.pem -tls-key tls/key.pem \
          -mutual-tls-ca client-ca.pem -loglevel 4 "${db[@]}" 2> logs/$peer.err &
        pid=$!; PIDS+=($pid)
        wait_port $PORT_CFSSL
        LG_TLS 127.0.0.1:$PORT_CFSSL --path /api/v1/cfssl/sign --bodies body-cfssl --content-type application/json --secs 0.5 >/dev/null
        before=$(sqlite3 certdb.db "SELECT count(*) FROM certificates")
        measure $peer "$pid" LG_TLS 127.0.0.1:$PORT_CFSSL --path /api/v1/cfssl/sign --bodies body-cfssl --content-type application/json
        stop "$pid"
        after=$(sqlite3 certdb.db "SELECT count(*) FROM certificates")
        if [ "$peer" = cfssl-db ]; then NOTE[$peer]="certdb rows +$((after - before))"; else NOTE[$peer]="records nothing"; fi ;;
    esac
  done
  {
    echo
    echo "Issuance: CSR → signed (and recorded) certificate, $CONNS keep-alive mTLS connections, ${SECS}s, server on cores $SERVER_CORES, load generator on $LOADGEN_CORES"
    echo
    echo "| issuer | certs/s | per server CPU-s | p50 | p99 | errors | vs cfssl | vs cfssl + certdb | load avg | notes |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for peer in $PEERS; do
      [ -n "${RPS[$peer]:-}" ] || continue
      echo "| $peer | ${RPS[$peer]} | ${CPU[$peer]} | ${P50[$peer]} µs | ${P99[$peer]} µs | ${ERR[$peer]} | $(ratio "${RPS[$peer]}" "${RPS[cfssl]:-0}") | $(ratio "${RPS[$peer]}" "${RPS[cfssl-db]:-0}") | ${LOAD[$peer]} | ${NOTE[$peer]:-} |"
    done
  } | tee -a table.md
fi

if [[ " $PARTS " == *" ocsp "* ]]; then
  echo "== OCSP: requests" >&2
  mkdir -p ocsp-certs ocsp-req
  for i in $(seq -w 1 "$OCSP_REQS"); do
    tw cert issue --profile server --san "DNS:ocsp-$i.bench.internal" --out "ocsp-certs/$i" >/dev/null
    openssl ocsp -issuer ca/intermediate.pem -cert "ocsp-certs/$i/cert.pem" -no_nonce \
      -reqout "ocsp-req/$i.der" >/dev/null 2>&1
  done
  # openssl's index: every certificate of the inventory that the requests ask about
  : > index.txt
  echo "unique_subject = no" > index.txt.attr
  for i in $(seq -w 1 "$OCSP_REQS"); do
    c=ocsp-certs/$i/cert.pem
    end=$(date -u -d "$(openssl x509 -in "$c" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
    serial=$(openssl x509 -in "$c" -noout -serial | cut -d= -f2)
    subj=$(openssl x509 -in "$c" -noout -subject -nameopt compat | sed 's/^subject=//')
    printf 'V\t%s\t\t%s\tunknown\t%s\n' "$end" "$serial" "${subj:-/}" >> index.txt
  done
  check() { # name url
    local o
    o=$(timeout 10 openssl ocsp -issuer ca/intermediate.pem -cert ocsp-certs/$(printf "%0${#OCSP_REQS}d" 1)/cert.pem \
      -url "$2" -CAfile ca/root.pem -no_nonce 2>&1 || true)
    echo "$1 check: $(echo "$o" | tr '\n' ' ')" >> raw.txt
    if ! echo "$o" | grep -q "Response verify OK" || ! echo "$o" | grep -q ": good"; then
      echo "$1 answered wrongly: $o" >&2; return 1
    fi
  }
  OCSP_PEERS=${OCSP_PEERS:-twoway openssl-multi1 openssl-multi2}
  for peer in $OCSP_PEERS; do
    echo "== OCSP: $peer" >&2
    case $peer in
      twoway)
        serve_twoway; pid=${PIDS[-1]}; port=$PORT_TW_HTTP ;;
      openssl-multi*)
        m=${peer#openssl-multi}
        taskset -c "$SERVER_CORES" openssl ocsp -index index.txt -port $PORT_OCSP -rsigner ca/intermediate.pem \
          -rkey ca/intermediate.key -CA ca/intermediate.pem -ndays 1 -multi "$m" \
          > logs/$peer.out 2> logs/$peer.err &
        pid=$!; PIDS+=($pid); port=$PORT_OCSP
        wait_port $port ;;
    esac
    check "$peer" "http://127.0.0.1:$port/ocsp"
    # Warm-up fills twoway's cache of signed answers; openssl has none, and its workers
    # stall on a connection that closes without a request (the end of a warm-up can leave
    # one), so it is measured cold.
    if [ "$peer" = twoway ]; then
      LG 127.0.0.1:$port --plain --path /ocsp --bodies ocsp-req --content-type application/ocsp-request --secs 0.5 >/dev/null
    fi
    # openssl -multi forks workers: cpu_secs adds its children's CPU time
    measure "ocsp-$peer" "$pid" LG 127.0.0.1:$port --plain --path /ocsp --bodies ocsp-req --content-type application/ocsp-request
    stop "$pid"
  done
  {
    echo
    echo "OCSP: POST /ocsp over $CONNS keep-alive plain-HTTP connections, $OCSP_REQS distinct requests, ${SECS}s, responder on cores $SERVER_CORES, load generator on $LOADGEN_CORES"
    echo
    echo "| responder | responses/s | per server CPU-s | p50 | p99 | errors | vs openssl -multi 1 | vs openssl -multi 2 | load avg |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for peer in $OCSP_PEERS; do
      n=ocsp-$peer
      [ -n "${RPS[$n]:-}" ] || continue
      echo "| $peer | ${RPS[$n]} | ${CPU[$n]} | ${P50[$n]} µs | ${P99[$n]} µs | ${ERR[$n]} | $(ratio "${RPS[$n]}" "${RPS[ocsp-openssl-multi1]:-0}") | $(ratio "${RPS[$n]}" "${RPS[ocsp-openssl-multi2]:-0}") | ${LOAD[$n]} |"
    done
  } | tee -a table.md
fi
echo "raw results: $OUT/raw.txt" >&2
