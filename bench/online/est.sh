#!/usr/bin/env bash
# EST simpleenroll next to POST /v1/enroll, in one run against one `twoway ca serve`
# (SQLite inventory): both are first enrollments with a one-time token (EST: the token as
# the HTTP Basic password, the CSR base64; /v1/enroll: JSON with the token and the PEM CSR),
# both durable (the certificate recorded and the token consumed before the answer), over
# CONNS keep-alive TLS connections. Each measurement has tokens of its own (single use),
# made before the server starts; EST and /v1/enroll alternate ROUNDS times. Prints
# enrollments per second, per server CPU-second and p50 for each, then the medians and
# their ratio.
#
#   bench/online/est.sh [TWOWAY] [LOADGEN]          # release builds: target/release/…
#   ROUNDS=3 SECS=2 CONNS=16 N=6000 PIN=1 bench/online/est.sh
#
# N is the tokens per measurement: keep it above what SECS seconds can use (the script
# stops with a message when a measurement ran out). PIN=1 puts the server on core 0 and
# the load generator on core 1.
set -euo pipefail
TW=$(realpath "${1:-target/release/twoway}")
LG=$(realpath "${2:-target/release/twoway-loadgen}")
ROUNDS=${ROUNDS:-3} SECS=${SECS:-2} CONNS=${CONNS:-16} N=${N:-6000} PIN=${PIN:-1}
OUT=$(mktemp -d /tmp/est-bench.XXXXXX); cd "$OUT"; echo "in $OUT" >&2
srv=(); lg=()
if [ "$PIN" = 1 ]; then srv=(taskset -c 0); lg=(taskset -c 1); fi
"$TW" ca init --ca-dir ca --name Bench >/dev/null
sed -i 's|^enroll_rate = .*|enroll_rate = 1000000|; s|^enroll_burst = .*|enroll_burst = 1000000|' ca/ca.toml
# the load generator always presents a client certificate; enrollment does not read it
"$TW" cert issue --ca-dir ca --profile client --san URI:spiffe://bench.internal/lg --out lg >/dev/null
mkdir -p csr
for i in $(seq -w 1 200); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj / -addext subjectAltName=DNS:dev.bench.internal -outform DER -out csr/$i.der 2>/dev/null
done
# one directory of whole requests per measurement, each with its own token
make_set() { # KIND DIR
  mkdir -p "$2"
  seq -w 1 "$N" | xargs -P 2 -I{} "$TW" token create --ca-dir ca --san DNS:dev.bench.internal \
    --profile device --ttl 2h 2>/dev/null > "$2.tokens"
  [ "$(wc -l < "$2.tokens")" = "$N" ] || { echo "token creation failed" >&2; exit 1; }
  local k=0
  while read -r tok; do
    k=$((k + 1)); local c; c=$(printf 'csr/%03d.der' $(( (k % 200) + 1 )))
    if [ "$1" = est ]; then
      local b; b=$(base64 -w 64 "$c")
      local auth; auth=$(printf 'dev:%s' "$tok" | base64 -w0)
      printf 'POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\nAuthorization: Basic %s\r\nContent-Type: application/pkcs10\r\nContent-Length: %d\r\n\r\n%s\n' \
        "$auth" $(( ${#b} + 1 )) "$b" > "$2/$(printf %06d $k)"
    else
      local pem; pem=$(openssl req -inform DER -in "$c" | awk 'BEGIN{ORS="\\n"} {print}')
      printf '{"token":"%s","csr":"%s"}' "$tok" "$pem" > "$2/$(printf %06d $k)"
    fi
  done < "$2.tokens"
}
echo "making $((2 * ROUNDS)) sets of $N tokens and requests…" >&2
for r in $(seq 1 "$ROUNDS"); do make_set est "est-$r"; make_set enroll "enroll-$r"; done
cpu() { awk '{printf "%.2f", ($14+$15)/100}' /proc/$1/stat; }
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
RUST_LOG=warn "${srv[@]}" "$TW" ca serve --ca-dir ca --listen 127.0.0.1:19543 --http-listen 127.0.0.1:19580 >serve.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -n "$(ss -Hltn 'sport = :19580')" ] && break; sleep 0.05; done
tls=(--ca ca/root.pem --cert lg/chain.pem --key lg/key.pem --conns "$CONNS" --secs "$SECS")
for r in $(seq 1 "$ROUNDS"); do
  for kind in est enroll; do
    if [ $kind = est ]; then args=(--path /.well-known/est/simpleenroll --bodies "est-$r" --raw)
    else args=(--path /v1/enroll --bodies "enroll-$r" --content-type application/json); fi
    c0=$(cpu $pid)
    o=$("${lg[@]}" "$LG" post 127.0.0.1:19543 "${tls[@]}" "${args[@]}")
    c1=$(cpu $pid)
    n=$(echo "$o" | val requests); e=$(echo "$o" | val errors)
    if [ "$n" -ge "$N" ] || [ "${e%.*}" != 0 ]; then
      echo "round $r $kind used every token or failed ($o): raise N or lower SECS" >&2; exit 1
    fi
    echo "round $r $kind rps=$(echo "$o" | val requests_per_sec) per_cpu_s=$(awk -v n="$n" -v a="$c0" -v b="$c1" 'BEGIN{printf "%.0f", n/(b-a)}') p50_us=$(echo "$o" | val p50_us) errors=$e"
  done
done | tee results.txt
med() { grep " $1 " results.txt | val rps | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
est=$(med est) enr=$(med enroll)
rows=$("$TW" cert list --ca-dir ca --json --limit 1 | sed -n 's/.*"total": *\([0-9]*\).*/\1/p')
echo "median rps: est=$est enroll=$enr ratio=$(awk -v a="$est" -v b="$enr" 'BEGIN{printf "%.2f", a/b}') inventory_rows=$rows"
