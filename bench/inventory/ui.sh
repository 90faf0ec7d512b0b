#!/usr/bin/env bash
# Times the dashboard's pages and the CRL on a large inventory (BENCHMARKS.md, "Inventory
# queries"): starts `twoway ca serve` on the CA directory run.sh filled, with an
# administrator's certificate made here, and measures each page RUNS times (default 5,
# after one warm-up) with curl on one 127.0.0.1 connection each. "server" is curl's
# time_starttransfer - time_pretransfer: from the request sent to the first byte back,
# i.e. the server's time plus a loopback round trip, without the TLS handshake. The
# inventory is whatever run.sh made: CA_DIR/inventory.db or ca.toml's PostgreSQL database.
#
#   bench/inventory/ui.sh [TWOWAY_BIN] [CA_DIR]
set -euo pipefail
BIN=${1:-target/release/twoway}
DIR=${2:-/tmp/twoway-inventory-bench}
RUNS=${RUNS:-5}
[[ -f "$DIR/ca.toml" ]] || { echo "no CA in $DIR: run bench/inventory/run.sh first" >&2; exit 64; }

ADMIN="URI:spiffe://bench.example/admin"
if [[ ! -f "$DIR/bench-admin/key.pem" ]]; then
    "$BIN" cert issue --ca-dir "$DIR" --profile client --san "$ADMIN" --out "$DIR/bench-admin" >/dev/null
fi
grep -q "spiffe://bench.example/admin" "$DIR/ca.toml" ||
    sed -i "s|^admins = .*|admins = [\"$ADMIN\"]|" "$DIR/ca.toml"

LOG=$(mktemp)
"$BIN" ca serve --ca-dir "$DIR" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
URL=
for _ in $(seq 120); do
    URL=$(grep -o 'https://127.0.0.1:[0-9]*' "$LOG" | head -1 || true)
    [[ -n "$URL" ]] && break
    sleep 0.5
done
[[ -n "$URL" ]] || { cat "$LOG" >&2; exit 1; }
HTTP=$(grep -o 'http://127.0.0.1:[0-9]*' "$LOG" | head -1)
C=(-sS -m 60 --cacert "$DIR/root.pem" --cert "$DIR/bench-admin/chain.pem" --key "$DIR/bench-admin/key.pem")

measure() {
    local name=$1 path=$2
    curl "${C[@]}" -o /dev/null "$URL$path"
    local times=()
    for _ in $(seq "$RUNS"); do
        times+=("$(curl "${C[@]}" -o /dev/null -w '%{time_starttransfer} %{time_pretransfer}\n' "$URL$path" |
            awk '{ printf "%.4f", $1 - $2 }')")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v name="$name" '
        { t[NR] = $1 }
        END { printf "%-44s server median %.4f s  max %.4f s\n", name, t[int((NR + 1) / 2)], t[NR] }'
}

measure "overview /ui/" "/ui/"
measure "inventory, status=active, page 1" "/ui/certificates?status=active"
measure "inventory, owner=team-42, page 1" "/ui/certificates?owner=team-42"
measure "inventory, profile=server, page 1" "/ui/certificates?profile=server"
measure "inventory, status=active, page 1000 (offset)" "/ui/certificates?status=active&page=1000"
# the cursor of page 1000's predecessor: the last row of page 999, as the Next link holds it
CUR=$("$BIN" cert list --ca-dir "$DIR" --status active --limit 50 --page 999 --json |
    python3 -c 'import json,sys,datetime
it = json.load(sys.stdin)["items"][-1]
t = int(datetime.datetime.fromisoformat(it["recorded_at"].replace("Z", "+00:00")).timestamp())
print(str(t) + "." + it["fingerprint"])')
measure "inventory, status=active, page 1000 (keyset)" "/ui/certificates?status=active&page=1000&after=$CUR"
FP=$("$BIN" cert list --ca-dir "$DIR" --status active --limit 1 --page 5000 --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["fingerprint"])')
measure "certificate page" "/ui/certificates/$FP"
measure "owners /ui/owners" "/ui/owners"
measure "audit /ui/audit" "/ui/audit"

# The CRL: signed by the CLI (one process, wall time) from the revoked, unexpired entries.
N=$("$BIN" cert list --ca-dir "$DIR" --status revoked --json --limit 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
s=$(date +%s.%N)
"$BIN" crl --ca-dir "$DIR" --out "$DIR/bench.crl" >/dev/null
e=$(date +%s.%N)
ENTRIES=$(openssl crl -in "$DIR/bench.crl" -noout -text | grep -c 'Serial Number' || true)
printf '%-44s %.3f s wall (%s entries; %s revoked in all)\n' "twoway crl" "$(echo "$e - $s" | bc)" "$ENTRIES" "$N"
