#!/usr/bin/env bash
# Offline issuance, side by side in one run, both pinned to core 0:
#   twoway (library loop): CSR verified, policy checked, signed, recorded durably in SQLite
#                          (WAL, synchronous=FULL, one transaction per certificate)
#   twoway cert sign:      the same through the CLI, one process per certificate
#   openssl x509 -req:     the same profile signed by openssl, one process per certificate,
#                          recording nothing
# Usage: bench/issuance/run.sh [SECONDS_PER_MEASUREMENT]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
cargo build --release -q -p twoway -p twoway-issue-bench
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pin="taskset -c 0"

"$bin/twoway" ca init --ca-dir "$work/ca" --name "Bench Corp" --key-type p256 >/dev/null
mkdir -p "$work/csr"
for i in $(seq 1 100); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=host-$i.example.internal" -addext "subjectAltName=DNS:host-$i.example.internal" \
    -out "$work/csr/$i.csr" 2>/dev/null
done

lib=$($pin "$bin/twoway-issue-bench" "$work/ca" "$work/csr" "$secs")
lib_rate=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["certs_per_sec"])' "$lib")

count_loop() { # command... ; runs "command $i" for $secs seconds, prints the rate
  local n=0 end=$((SECONDS + secs)) start now
  start=$(date +%s.%N)
  while [ $SECONDS -lt $end ]; do
    i=$(( n % 100 + 1 )); "$@" "$i"; n=$((n + 1))
  done
  now=$(date +%s.%N)
  python3 -c "print(round($n / ($now - $start), 1))"
}

cli_sign() { $pin "$bin/twoway" cert sign "$work/csr/$1.csr" --ca-dir "$work/ca" --profile server --ttl 90d >/dev/null; }

cat > "$work/ext.cnf" <<'CNF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
CNF
ossl_sign() {
  $pin openssl x509 -req -in "$work/csr/$1.csr" -CA "$work/ca/intermediate.pem" \
    -CAkey "$work/ca/intermediate.key" -extfile "$work/ext.cnf" -copy_extensions copy \
    -days 90 -set_serial "0x$(openssl rand -hex 16)" -out "$work/ossl.pem" 2>/dev/null
}

cli_rate=$(count_loop cli_sign)
ossl_rate=$(count_loop ossl_sign)
issued=$("$bin/twoway" cert list --ca-dir "$work/ca" --json --limit 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')

printf '\n%-52s %12s %10s\n' "issuer (P-256 server profile, ${secs}s each, core 0)" "certs/s" "vs openssl"
printf '%-52s %12s %10s\n' "twoway library loop (signed + durably recorded)" "$lib_rate" "$(python3 -c "print(f'{$lib_rate/$ossl_rate:.1f}x')")"
printf '%-52s %12s %10s\n' "twoway cert sign, one process per cert (recorded)" "$cli_rate" "$(python3 -c "print(f'{$cli_rate/$ossl_rate:.1f}x')")"
printf '%-52s %12s %10s\n' "openssl x509 -req, one process per cert (no record)" "$ossl_rate" "1.0x"
printf '(inventory now holds %s certificates, each with its audit entry)\n' "$issued"
