#!/usr/bin/env bash
# Issuance with the intermediate key in a PKCS#11 token (SoftHSM2) beside the same with a
# key file, in one run, both pinned to core 0: the library loop of bench/issuance (CSR
# verified, policy checked, signed, recorded durably in SQLite) on two CAs that differ
# only in where the intermediate key lives. Then OCSP: `ca serve` of each CA answering
# POST /ocsp on its plain-HTTP listener (64 distinct requests, 32 keep-alive connections,
# twoway-loadgen on core 1), alternating. Also `openssl speed`'s software P-256 signing,
# to say where the time goes.
# Usage: bench/hsm/run.sh [SECONDS_PER_MEASUREMENT] [RUNS]     (defaults 5, 3)
#        SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/hsm/run.sh   (binaries built already)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
runs=${2:-3}
target=${CARGO_TARGET_DIR:-$PWD/target}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p twoway -p twoway-issue-bench -p twoway-loadgen
bin=$target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pin="taskset -c 0"
module=/usr/lib/softhsm/libsofthsm2.so

export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"
echo "directories.tokendir = $work/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --so-pin 1234 --pin 5678 >/dev/null
(umask 077; echo 5678 > "$work/pin")

"$bin/twoway" ca init --ca-dir "$work/file" --name "Bench Corp" --key-type p256 >/dev/null
"$bin/twoway" ca init --ca-dir "$work/hsm" --name "Bench Corp" --key-type p256 \
  --key-uri 'pkcs11:token=bench;object=intermediate' --pkcs11-module "$module" \
  --pin-file "$work/pin" >/dev/null
mkdir -p "$work/csr"
for i in $(seq 1 100); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=host-$i.example.internal" -addext "subjectAltName=DNS:host-$i.example.internal" \
    -out "$work/csr/$i.csr" 2>/dev/null
done

rate() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["certs_per_sec"])' "$1"; }
printf '%-4s %14s %14s %8s\n' run "key file/s" "SoftHSM2/s" ratio
for r in $(seq 1 "$runs"); do
  f=$(rate "$($pin "$bin/twoway-issue-bench" "$work/file" "$work/csr" "$secs")")
  h=$(rate "$($pin "$bin/twoway-issue-bench" "$work/hsm" "$work/csr" "$secs")")
  printf '%-4s %14s %14s %8s\n' "$r" "$f" "$h" "$(python3 -c "print(round($h / $f, 2))")"
done

echo
echo "OCSP responses/s (ca serve, POST /ocsp, warm cache of signed answers):"
ports=(19181 19182)
for ca in file hsm; do
  mkdir -p "$work/req-$ca"
  for n in $(seq -w 1 64); do
    "$bin/twoway" cert issue --ca-dir "$work/$ca" --profile server \
      --san "DNS:ocsp-$n.bench.internal" --out "$work/o-$ca-$n" >/dev/null
    openssl ocsp -issuer "$work/$ca/intermediate.pem" -cert "$work/o-$ca-$n/cert.pem" -no_nonce \
      -reqout "$work/req-$ca/$n.der" >/dev/null 2>&1
  done
done
ocsp_rate() { # ca port
  local ca=$1 port=$2 pid out
  RUST_LOG=warn $pin "$bin/twoway" ca serve --ca-dir "$work/$ca" --listen 127.0.0.1:0 \
    --http-listen "127.0.0.1:$port" >"$work/serve-$ca.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  lg() { taskset -c 1 "$bin/twoway-loadgen" post "127.0.0.1:$port" --plain --path /ocsp \
    --bodies "$work/req-$ca" --content-type application/ocsp-request --conns 32 "$@"; }
  lg --secs 0.5 >/dev/null
  out=$(lg --secs "$secs")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$out" | sed -n 's/.*requests_per_sec=\([0-9.]*\).*/\1/p'
}
printf '%-4s %14s %14s %8s\n' run "key file/s" "SoftHSM2/s" ratio
for r in $(seq 1 "$runs"); do
  f=$(ocsp_rate file "${ports[0]}")
  h=$(ocsp_rate hsm "${ports[1]}")
  printf '%-4s %14s %14s %8s\n' "$r" "$f" "$h" "$(python3 -c "print(round($h / $f, 2))")"
done

echo
echo "the signature alone, one core (openssl speed, software P-256: sign/s is the 4th number):"
$pin openssl speed -seconds 2 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa'
