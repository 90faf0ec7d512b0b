#!/usr/bin/env bash
# Where an issuance's CPU goes, per server thread: `twoway ca serve` (SQLite) pinned to core
# 0, the load generator on core 1, POST /v1/sign over CONNS keep-alive mTLS connections for
# SECS seconds, a fresh inventory each round. Prints, per round, the throughput, the
# issuances per commit, and the CPU microseconds per certificate of each thread name
# (tokio-rt-worker: TLS, HTTP, JSON, CSR checks, signing; twoway-commit: the committer,
# i.e. SQLite), read from /proc/<pid>/task/*/stat.
#
#   bench/online/threads.sh                                  # ROUNDS=3 with target/release/twoway
#   BINS="/tmp/old/twoway target/release/twoway" ROUNDS=4 bench/online/threads.sh
#                                                            # alternate two builds, round by round
set -euo pipefail
SECS=${SECS:-6}
CONNS=${CONNS:-32}
N_CSRS=${N_CSRS:-500}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BINS=${BINS:-$TARGET/release/twoway}
LOADGEN=${LOADGEN:-$TARGET/release/twoway-loadgen}
OUT=${OUT:-$(mktemp -d /tmp/twoway-threads-bench.XXXXXX)}
PORT=19443 PORT_HTTP=19080
abs=""
for b in $BINS $LOADGEN; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p twoway -p twoway-loadgen" >&2; exit 1; }
done
for b in $BINS; do abs="$abs $(realpath "$b")"; done
BINS=${abs# }
LOADGEN=$(realpath "$LOADGEN")
for p in $PORT $PORT_HTTP; do
  [ -z "$(ss -Hltn "sport = :$p")" ] || { echo "port $p is already taken" >&2; exit 1; }
done
cd "$OUT"
echo "working in $OUT" >&2
first=${BINS%% *}
RUST_LOG=warn "$first" ca init --name Bench --ca-dir ca.orig >/dev/null
sed -i 's|^admins = \[\]|admins = ["URI:spiffe://bench.internal/admin"]|' ca.orig/ca.toml
RUST_LOG=warn "$first" cert issue --profile client --san URI:spiffe://bench.internal/admin \
  --out admin --ca-dir ca.orig >/dev/null
mkdir -p body
for i in $(seq -w 1 "$N_CSRS"); do
  pem=$(openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=host-$i.bench.internal" -addext "subjectAltName=DNS:host-$i.bench.internal" 2>/dev/null \
    | awk 'BEGIN{ORS="\\n"} {print}')
  printf '{"csr":"%s","profile":"server","ttl":"24h"}' "$pem" > "body/$i.json"
done

pid=""
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true' EXIT
metric() { curl -s "http://127.0.0.1:$PORT_HTTP/metrics" | awk -v m="$1" '$1==m {print $2}'; }
threads() { # thread name -> utime+stime ticks, summed over threads of that name
  for t in /proc/"$pid"/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done \
    | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
LG() { taskset -c 1 "$LOADGEN" post 127.0.0.1:$PORT --conns "$CONNS" --path /v1/sign --bodies body \
  --content-type application/json --ca ca/root.pem --cert admin/chain.pem --key admin/key.pem "$@"; }
hz=$(getconf CLK_TCK)
for round in $(seq 1 "$ROUNDS"); do
  for bin in $BINS; do
    rm -rf ca; cp -a ca.orig ca
    RUST_LOG=warn taskset -c 0 "$bin" ca serve --ca-dir "$OUT/ca" --listen 127.0.0.1:$PORT \
      --http-listen 127.0.0.1:$PORT_HTTP > serve.log 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do [ -n "$(ss -Hltn "sport = :$PORT_HTTP")" ] && break; sleep 0.05; done
    LG --secs 0.5 >/dev/null
    n0=$(metric twoway_ca_issuance_committed_total); b0=$(metric twoway_ca_issuance_commits_total)
    threads > t0
    out=$(LG --secs "$SECS")
    threads > t1
    n1=$(metric twoway_ca_issuance_committed_total); b1=$(metric twoway_ca_issuance_commits_total)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    n=$((n1 - n0)); b=$((b1 - b0))
    rps=$(echo "$out" | sed -n 's/.*requests_per_sec=\([0-9]*\).*/\1/p')
    per=$(join t0 t1 | awk -v n="$n" -v hz="$hz" '{d=$3-$2; tot+=d; if (d>0) printf " %s=%.0f", $1, d*1e6/hz/n}
      END {printf " total=%.0f", tot*1e6/hz/n}')
    echo "round $round $bin: certs/s=$rps per-commit=$(awk -v n="$n" -v b="$b" 'BEGIN{printf "%.1f", n/b}') µs CPU per cert:$per"
  done
done
