#!/usr/bin/env bash
# Disk and memory footprint under churn (issue 10 item 7, issue 11 item 7):
# distinct 1 MiB catalogs through s360edge in front of the simulator, with the
# storage directory and RSS sampled; then a restart on the same directory.
#
#   ./churn.sh EDGE_BINARY MAX_SIZE DURATION WORKDIR
# e.g. ./churn.sh bin/s360edge 8MiB 10m work/churn-8m
# Needs bin/s360sim, bin/churn and bin/freeport (go build ./cmd/churn etc.).
set -euo pipefail
cd "$(dirname "$0")"
EDGE_BIN=$1 MAX_SIZE=$2 DURATION=$3 WORK=$4
BIN=${BIN:-$PWD/bin}
rm -rf "$WORK" && mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
mapfile -t PORTS < <("$BIN/freeport" 3)
P_SIM=${PORTS[0]} P_EDGE=${PORTS[1]} P_ADMIN=${PORTS[2]}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }
rss() { grep -E "^VmRSS:" "/proc/$1/status" | awk '{printf "%.1f", $2/1024}'; }

"$BIN/s360sim" -addr "127.0.0.1:$P_SIM" -catalog-mb 1 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$P_SIM/_sim/fixtures"
export SIM_URL=http://127.0.0.1:$P_SIM EDGE_PORT=$P_EDGE ADMIN_PORT=$P_ADMIN STORE=$WORK/store MAX_SIZE
start_edge() {
	env HOME="$WORK" XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" \
		"$EDGE_BIN" run --config Caddyfile.churn --adapter caddyfile >>"$WORK/edge.log" 2>&1 &
	EDGE_PID=$!
	PIDS+=($EDGE_PID)
	wait_up "http://127.0.0.1:$P_EDGE/"
}
start_edge
sleep 5
echo "idle RSS after start: $(rss "$EDGE_PID") MiB"
"$BIN/churn" -edge "http://127.0.0.1:$P_EDGE" -pid "$EDGE_PID" -dir "$WORK/store" -d "$DURATION" -every 30s
kill -TERM "$EDGE_PID"; wait "$EDGE_PID" || true
echo
echo "after a restart on the same directory (one more minute of churn, new keys):"
start_edge
"$BIN/churn" -edge "http://127.0.0.1:$P_EDGE" -pid "$EDGE_PID" -dir "$WORK/store" -d 1m -every 30s -start 1000000
