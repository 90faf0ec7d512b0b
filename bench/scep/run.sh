#!/usr/bin/env bash
# SCEP benchmark: PKCSReq per second, twoway next to micromdm's scepserver (Debian `scep`),
# in one run, on the same machine.
#
#   bench/scep/run.sh                          # -n 1000 requests, concurrency 1 then 8
#   bench/scep/run.sh -n 2000 -c "1 4 8"
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/path bench/scep/run.sh   # reuse built binaries
#
# Same key sizes on both sides: RSA 2048 for the client keys, for twoway's CA
# (`ca init --key-type rsa2048`) and RA, and for scepserver's CA (`ca -keySize 2048`).
# The load generator (bench/scepload) builds every request before the clock starts
# (AES-128-CBC envelope to the server's RSA certificate, SHA-256 with RSA signature, one CSR
# per request with its own CN) and sends them from C threads, a connection each, over plain
# HTTP to 127.0.0.1; a request counts when its CertRep says SUCCESS.
#   - twoway ca serve: SQLite inventory in a temp dir (WAL, synchronous=FULL), every
#     certificate committed (row and audit entry) before its CertRep leaves; the challenge
#     passwords are one-time tokens made before the run;
#   - scepserver: its file depot in the temp dir, a static -challenge, -allowrenew 0. It
#     binds every interface (it has no flag to narrow that); only 127.0.0.1 is called.
# "server CPU-ms/req" is the server's utime+stime over the run (from /proc) per success.
set -euo pipefail

N=1000
CONC="1 8"
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -c) CONC=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/twoway-scep-bench.XXXXXX)}
PORT_TW=19643 PORT_TW_HTTP=19680 PORT_SCEPSERVER=19690

command -v scepserver >/dev/null || { echo "missing scepserver: apt-get install scep" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building release binaries (target: $TARGET)…" >&2
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p twoway -p twoway-scepload)
fi
TWOWAY=$TARGET/release/twoway
LOAD=$TARGET/release/twoway-scepload
mkdir -p "$OUT"; cd "$OUT"
echo "working in $OUT" >&2

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$1/scep?operation=GetCACaps" && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2; exit 1
}

"$TWOWAY" ca init --ca-dir tw --name "SCEP Bench" --key-type rsa2048 >/dev/null 2>&1
printf '\n[scep]\nenabled = true\n' >> tw/ca.toml
"$TWOWAY" ca serve --ca-dir tw --listen 127.0.0.1:$PORT_TW --http-listen 127.0.0.1:$PORT_TW_HTTP \
  > tw.log 2>&1 &
TW_PID=$!; pids+=("$TW_PID")
scepserver ca -init -depot depot -keySize 2048 >/dev/null 2>&1
scepserver -depot depot -port $PORT_SCEPSERVER -challenge bench-secret -allowrenew 0 \
  > scepserver.log 2>&1 &
SS_PID=$!; pids+=("$SS_PID")
wait_port $PORT_TW_HTTP; wait_port $PORT_SCEPSERVER

run() { # label pid args…
  local label=$1 pid=$2; shift 2
  local before after line
  before=$(cpu_ticks "$pid")
  line=$("$LOAD" "$@" --label "$label" || true)
  after=$(cpu_ticks "$pid")
  echo "$line" | python3 -c '
import json, sys, os
d = json.loads(sys.stdin.read())
cpu = (int(sys.argv[1]) - int(sys.argv[2])) / os.sysconf("SC_CLK_TCK")
ok = d["success"] or 1
print("| %s | %d | %d | %d | %.1f | %.2f | %s |" % (d["server"], d["concurrency"], d["requests"], d["success"],
      d["pkcsreq_per_second"], cpu * 1000 / ok, json.dumps(d["failures"]) if d["failures"] else "0"))
print(d["pkcsreq_per_second"], file=open(sys.argv[3], "w"))
' "$after" "$before" "rate.$label"
}

echo "| server | concurrency | requests | CertRep SUCCESS | PKCSReq/s | server CPU-ms/req | failures |"
echo "|---|---|---|---|---|---|---|"
for c in $CONC; do
  run twoway "$TW_PID" --url "http://127.0.0.1:$PORT_TW_HTTP/scep" --ca-dir tw -n "$N" -c "$c"
  run scepserver "$SS_PID" --url "http://127.0.0.1:$PORT_SCEPSERVER/scep" --challenge bench-secret -n "$N" -c "$c"
  python3 -c 'import sys; a, b = float(open("rate.twoway").read()), float(open("rate.scepserver").read()); print("concurrency %s: twoway / scepserver = %.1fx" % (sys.argv[1], a / b if b else float("inf")))' "$c" >&2
done
