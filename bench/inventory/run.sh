#!/usr/bin/env bash
# Times inventory queries on a large inventory (BENCHMARKS.md, "Inventory queries").
#
#   bench/inventory/run.sh [TWOWAY_BIN] [CA_DIR] [COUNT]
#   DATABASE=postgres://postgres@127.0.0.1:5432/inv bench/inventory/run.sh BIN DIR 1000000
#
# Without CA_DIR/ca.toml it first makes the CA with `twoway ca init --name Bench` and fills
# its inventory with COUNT (default 1,000,000) synthetic certificates through the store's
# own batch path (`cargo run --release -p twoway-store --example inventory`; GEN=path to a
# built one), issued by the CA's intermediate ("O=Bench, CN=Bench Intermediate CA") so the
# CRL finds the revoked ones. The inventory is CA_DIR/inventory.db, or, with DATABASE set,
# that PostgreSQL database (it must exist and be empty), written into ca.toml's
# `[server] database` so every later command uses it. Each query runs RUNS times
# (default 5) after one warm-up run; the line shows the median and the slowest wall time.
# SCANS=0 leaves out the two queries that read the whole table (`--san`, `--label`), which
# take minutes in all at ten million certificates.
# The binary should be a release build (`cargo build --release -p twoway`).
set -euo pipefail
BIN=${1:-target/release/twoway}
DIR=${2:-/tmp/twoway-inventory-bench}
COUNT=${3:-1000000}
RUNS=${RUNS:-5}
SCANS=${SCANS:-1}

if [[ ! -f "$DIR/ca.toml" ]]; then
    "$BIN" ca init --ca-dir "$DIR" --name Bench >/dev/null
    TARGET=$DIR/inventory.db
    if [[ -n "${DATABASE:-}" ]]; then
        sed -i "s|^# database = .*|database = \"$DATABASE\"|" "$DIR/ca.toml"
        grep -q "^database = " "$DIR/ca.toml" || { echo "could not set [server] database in ca.toml" >&2; exit 1; }
        TARGET=$DATABASE
    fi
    GEN=${GEN:-}
    if [[ -z "$GEN" ]]; then
        cargo build -q --release -p twoway-store --example inventory
        GEN=target/release/examples/inventory
    fi
    "$GEN" "$TARGET" "$COUNT" "O=Bench, CN=Bench Intermediate CA"
fi

# One open first: a binary with new indexes in its schema builds them here, once.
start=$(date +%s.%N)
"$BIN" ca show --ca-dir "$DIR" >/dev/null
echo "first open: $(echo "$(date +%s.%N) - $start" | bc) s"

measure() {
    local name=$1
    shift
    "$BIN" "$@" --ca-dir "$DIR" >/dev/null
    local times=()
    for _ in $(seq "$RUNS"); do
        local s e
        s=$(date +%s.%N)
        "$BIN" "$@" --ca-dir "$DIR" >/dev/null
        e=$(date +%s.%N)
        times+=("$(echo "$e - $s" | bc)")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v name="$name" '
        { t[NR] = $1 }
        END { printf "%-34s median %.3f s  max %.3f s\n", name, t[int((NR + 1) / 2)], t[NR] }'
}

measure "cert list --limit 50" cert list --limit 50
if [[ $SCANS == 1 ]]; then
    measure "cert list --san '*.ns-7…' (1/40)" cert list --san '*.ns-7.example.internal' --limit 50
fi
measure "cert list --expiring 30d" cert list --expiring 30d --limit 50
measure "cert list --owner team-42" cert list --owner team-42 --limit 50
measure "ca show (counts)" ca show
if [[ $SCANS == 1 ]]; then
    measure "cert list --label env=prod" cert list --label env=prod --limit 50
fi
measure "cert list --status revoked" cert list --status revoked --limit 50
measure "cert list --page 1000" cert list --limit 50 --page 1000
measure "cert list --json --limit 1000" cert list --limit 1000 --json
measure "cert list --expiring 30d --limit 50" cert list --expiring 30d --limit 50
measure "cert list --profile peer" cert list --profile peer --limit 50
