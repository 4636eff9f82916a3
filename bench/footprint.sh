#!/usr/bin/env bash
# Disk and memory footprint of s360edge (issue 10 item 7, issue 11 item 7), on
# free loopback ports, every process stopped by its PID. Needs bin/s360sim,
# bin/freeport and bin/churn (go build ./cmd/churn ./cmd/freeport), and wrk.
#
#   ./footprint.sh churn EDGE_BINARY MAX_SIZE DURATION WORKDIR
#     distinct 1 MiB catalogs (every request a miss that stores a new entry)
#     for DURATION, sampling the storage directory and RSS every 30 s; then a
#     restart on the same directory and one more minute of churn.
#   ./footprint.sh readers EDGE_BINARY WORKDIR [DURATION]
#     idle RSS with max_size 1GiB, then a 10 MB catalog under 100 concurrent
#     readers (wrk) for DURATION (default 15s): throughput and peak RSS.
set -euo pipefail
cd "$(dirname "$0")"
MODE=$1 EDGE_BIN=$2
case $MODE in
churn) MAX_SIZE=$3 DURATION=$4 WORK=$5 PRODUCTS=(-catalog-mb 1) ;;
readers) MAX_SIZE=1GiB WORK=$3 DURATION=${4:-15s} PRODUCTS=(-products 3000) ;;
*) echo "usage: see the head of $0" >&2; exit 2 ;;
esac
BIN=${BIN:-$PWD/bin}
rm -rf "$WORK" && mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
mapfile -t PORTS < <("$BIN/freeport" 3)
P_SIM=${PORTS[0]} P_EDGE=${PORTS[1]} P_ADMIN=${PORTS[2]}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }
mem() { awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ {printf "%s %.1f MiB, ", $1, $2/1024}' "/proc/$1/status"; echo; }

"$BIN/s360sim" -addr "127.0.0.1:$P_SIM" "${PRODUCTS[@]}" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$P_SIM/_sim/fixtures"
export SIM_URL=http://127.0.0.1:$P_SIM EDGE_PORT=$P_EDGE ADMIN_PORT=$P_ADMIN STORE=$WORK/store MAX_SIZE
E=http://127.0.0.1:$P_EDGE
start_edge() {
	env HOME="$WORK" XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" \
		"$EDGE_BIN" run --config Caddyfile.churn --adapter caddyfile >>"$WORK/edge.log" 2>&1 &
	EDGE_PID=$!
	PIDS+=($EDGE_PID)
	wait_up "$E/"
}
start_edge
sleep 10
echo "idle, 10 s after start: $(mem "$EDGE_PID")"

if [ "$MODE" = churn ]; then
	"$BIN/churn" -edge "$E" -pid "$EDGE_PID" -dir "$WORK/store" -d "$DURATION" -every 30s
	kill -TERM "$EDGE_PID"
	wait "$EDGE_PID" || true
	echo
	echo "after a restart on the same directory (one more minute of churn, new keys):"
	start_edge
	"$BIN/churn" -edge "$E" -pid "$EDGE_PID" -dir "$WORK/store" -d 1m -every 30s -start 1000000
	exit 0
fi

CAT=$E/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed
curl -s -X POST -H 'Content-Type: application/json' -d '{}' -o "$WORK/cat.json" "$CAT"
echo "catalog: $(stat -c %s "$WORK/cat.json") bytes; after the miss: $(mem "$EDGE_PID")"
wrk -t2 -c100 -d"$DURATION" --timeout 10s --latency -s wrk.lua "$CAT" >"$WORK/wrk.txt"
grep -E "Requests/sec|Transfer/sec" "$WORK/wrk.txt"
echo "after 100 readers for $DURATION: $(mem "$EDGE_PID")"
