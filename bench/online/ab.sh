#!/usr/bin/env bash
# A/B of two twoway binaries (two commits' release builds) on the online CA's hot paths:
# POST /v1/sign (SQLite, 32 keep-alive mTLS connections, 400 CSRs round-robin) and
# POST /ocsp on the plain listener (32 keep-alive connections, 64 requests), the server
# pinned to core 0 and the load generator to core 1, A and B alternating ROUNDS times on
# one CA directory. Prints certificates (answers) per second, per server CPU-second, p50.
#
#   INIT=OLDER_BIN bench/online/ab.sh BIN_A BIN_B target/release/twoway-loadgen 4 5
#
# INIT (default BIN_B) makes the CA: use the older binary, whose ca.toml the newer reads.
set -euo pipefail
A=$1 B=$2 LG=$3 ROUNDS=${4:-3} SECS=${5:-5}
OUT=$(mktemp -d /tmp/wt18-ab.XXXXXX); cd "$OUT"; echo "in $OUT" >&2
ulimit -n 65536 2>/dev/null || true
# the older binary makes the CA: its ca.toml has no keys the older one would refuse
"${INIT:-$B}" ca init --ca-dir ca --name Bench >/dev/null
sed -i 's|^admins = \[\]|admins = ["URI:spiffe://bench.internal/admin"]|' ca/ca.toml
"${INIT:-$B}" cert issue --ca-dir ca --profile client --san URI:spiffe://bench.internal/admin --out admin >/dev/null
mkdir -p csr body ocsp
for i in $(seq -w 1 400); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=host-$i.bench.internal" -addext "subjectAltName=DNS:host-$i.bench.internal" -out csr/$i.csr 2>/dev/null
  pem=$(awk 'BEGIN{ORS="\\n"} {gsub(/"/, "\\\""); print}' csr/$i.csr)
  printf '{"csr":"%s","profile":"server","ttl":"24h"}' "$pem" > body/$i.json
done
for i in $(seq -w 1 64); do
  "${INIT:-$B}" cert issue --ca-dir ca --profile server --san DNS:o-$i.bench.internal --out oc/$i >/dev/null
  openssl ocsp -issuer ca/intermediate.pem -cert oc/$i/cert.pem -no_nonce -reqout ocsp/$i.der >/dev/null 2>&1
done
cpu() { awk '{printf "%.2f", ($14+$15)/100}' /proc/$1/stat; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
for r in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ $which = B ] && bin=$B
    RUST_LOG=warn taskset -c 0 "$bin" ca serve --ca-dir ca --listen 127.0.0.1:19443 --http-listen 127.0.0.1:19080 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do [ -n "$(ss -Hltn 'sport = :19080')" ] && break; sleep 0.05; done
    tls=(--ca ca/root.pem --cert admin/chain.pem --key admin/key.pem)
    taskset -c 1 "$LG" post 127.0.0.1:19443 --conns 32 --secs 0.5 "${tls[@]}" --path /v1/sign --bodies body --content-type application/json >/dev/null
    c0=$(cpu $pid); o=$(taskset -c 1 "$LG" post 127.0.0.1:19443 --conns 32 --secs "$SECS" "${tls[@]}" --path /v1/sign --bodies body --content-type application/json); c1=$(cpu $pid)
    n=$(echo "$o" | val requests); echo "round $r $which sign rps=$(echo "$o" | val requests_per_sec) per_cpu_s=$(awk -v n=$n -v a=$c0 -v b=$c1 'BEGIN{printf "%.0f", n/(b-a)}') p50=$(echo "$o" | val p50_us) errors=$(echo "$o" | val errors)"
    taskset -c 1 "$LG" post 127.0.0.1:19080 --plain --conns 32 --secs 0.5 --path /ocsp --bodies ocsp --content-type application/ocsp-request >/dev/null
    c0=$(cpu $pid); o=$(taskset -c 1 "$LG" post 127.0.0.1:19080 --plain --conns 32 --secs "$SECS" --path /ocsp --bodies ocsp --content-type application/ocsp-request); c1=$(cpu $pid)
    n=$(echo "$o" | val requests); echo "round $r $which ocsp rps=$(echo "$o" | val requests_per_sec) per_cpu_s=$(awk -v n=$n -v a=$c0 -v b=$c1 'BEGIN{printf "%.0f", n/(b-a)}') p50=$(echo "$o" | val p50_us) errors=$(echo "$o" | val errors)"
    kill $pid; wait $pid 2>/dev/null || true; sleep 0.5
  done
done
