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
#     idle anonymous memory (RssAnon) with max_size 1GiB, 10 s and 150 s
#     (past Go's first forced GC) after a start with none of the binary's
#     pages cached, and VmRSS at 150 s; then 50
#     clients on a small hit (getPOSConfig) for DURATION (default 15s), then
#     a 10 MB catalog under 100 concurrent readers (wrk) for DURATION:
#     throughput, and RssAnon and VmRSS sampled every 0.2 s (the peaks).
#     Prints one Markdown table row.
#   ./footprint.sh compare WORKDIR ROUNDS DURATION EDGE_BINARY...
#     readers for each binary in turn, ROUNDS times, the order reversed in
#     every other round; prints the Markdown table.
#   ./footprint.sh hits WORKDIR ROUNDS DURATION EDGE_BINARY...
#     every binary running at once in front of one simulator; each round, 50
#     clients on a small hit (getPOSConfig) for DURATION against each in
#     turn, the order reversed in every other round; prints the req/s table.
set -euo pipefail
cd "$(dirname "$0")"
MODE=$1 EDGE_BIN=${2:-}
HEADER="| binary | round | idle 10 s: RssAnon MiB | idle 150 s: RssAnon MiB | idle 150 s: VmRSS (anon + file) MiB | small hit req/s | 10 MB catalog req/s | peak RssAnon under the readers MiB | peak VmRSS under the readers (anon + file at the peak) MiB | VmHWM since start MiB |"
source ./lib.sh
mem() { awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ {printf "%s %.1f MiB, ", $1, $2/1024}' "/proc/$1/status"; echo; }
# "VmRSS (RssAnon + RssFile)" in MiB
rss() { awk '/^VmRSS:/ {v=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {printf "%.1f (%.1f + %.1f)", v/1024, a/1024, f/1024}' "/proc/$1/status"; }
field() { awk -v k="$2:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$1/status"; }
if [ "$MODE" = hits ]; then
	WORK=$2 ROUNDS=$3 DURATION=$4
	shift 4
	BINS=("$@")
	BIN=${BIN:-$PWD/bin}
	rm -rf "$WORK" && mkdir -p "$WORK"
	WORK=$(cd "$WORK" && pwd)
	mapfile -t PORTS < <("$BIN/freeport" $((1 + 2 * ${#BINS[@]})))
	"$BIN/s360sim" -addr "127.0.0.1:${PORTS[0]}" >"$WORK/sim.log" 2>&1 &
	PIDS+=($!)
	wait_up "http://127.0.0.1:${PORTS[0]}/_sim/fixtures"
	URLS=()
	for i in "${!BINS[@]}"; do
		d=$WORK/edge-$i
		mkdir -p "$d"
		env HOME="$d" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" SIM_URL="http://127.0.0.1:${PORTS[0]}" \
			EDGE_PORT="${PORTS[1 + 2 * i]}" ADMIN_PORT="${PORTS[2 + 2 * i]}" STORE="$d/store" MAX_SIZE=1GiB \
			"${BINS[i]}" run --config Caddyfile.churn --adapter caddyfile >"$d/edge.log" 2>&1 &
		PIDS+=($!)
		URLS+=("http://127.0.0.1:${PORTS[1 + 2 * i]}/tnseb/backend-apis/catalogService/v1_33/getPOSConfig")
		wait_up "http://127.0.0.1:${PORTS[1 + 2 * i]}/"
		curl -s -X POST -H 'Content-Type: application/json' -d '{}' -o /dev/null "${URLS[i]}"
	done
	sleep 10 # let start-up settle
	printf '| round |'; for b in "${BINS[@]}"; do printf ' %s req/s |' "$(basename "$b")"; done; echo
	printf '|--:|'; for _ in "${BINS[@]}"; do printf -- '--:|'; done; echo
	for r in $(seq 1 "$ROUNDS"); do
		order=("${!BINS[@]}")
		if [ $((r % 2)) = 0 ]; then order=($(printf '%s\n' "${!BINS[@]}" | sort -rn)); fi
		declare -A got=()
		for i in "${order[@]}"; do
			got[$i]=$(wrk -t2 -c50 -d"$DURATION" --timeout 10s -s wrk.lua "${URLS[i]}" | awk '$1 == "RESULT" { if ($6 + $7 > 0) printf "%s (%d failed)", $2, $6 + $7; else printf "%s", $2 }')
		done
		printf '| %d |' "$r"; for i in "${!BINS[@]}"; do printf ' %s |' "${got[$i]}"; done; echo
	done
	exit 0
fi
if [ "$MODE" = compare ]; then
	WORK=$2 ROUNDS=$3 DURATION=$4
	shift 4
	BINS=("$@")
	echo "$HEADER"
	echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	for r in $(seq 1 "$ROUNDS"); do
		order=("${BINS[@]}")
		if [ $((r % 2)) = 0 ]; then
			order=()
			for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do order+=("${BINS[i]}"); done
		fi
		for b in "${order[@]}"; do
			ROUND=$r "./$(basename "$0")" readers "$b" "$WORK/$(basename "$b")-$r" "$DURATION"
		done
	done
	exit 0
fi
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
if [ "$MODE" = readers ]; then
	# Every binary starts as after a reboot: none of its pages cached. How
	# the cache was filled (the linker's writes, readahead) decides how much
	# of the file one page fault maps.
	dd if="$EDGE_BIN" iflag=nocache count=0 status=none
fi
start_edge
sleep 10
if [ "$MODE" = churn ]; then echo "idle, 10 s after start: $(mem "$EDGE_PID")"; fi
IDLE10=$(field "$EDGE_PID" RssAnon)

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

# readers: RSS at 10 s and 60 s of idling, a small hit, then the 10 MB catalog.
sleep 140
IDLE150=$(field "$EDGE_PID" RssAnon) IDLE150RSS=$(rss "$EDGE_PID")
POS=$E/tnseb/backend-apis/catalogService/v1_33/getPOSConfig
curl -s -X POST -H 'Content-Type: application/json' -d '{}' -o /dev/null "$POS"
wrk -t2 -c50 -d"$DURATION" --timeout 10s -s wrk.lua "$POS" >"$WORK/wrk-small.txt"
CAT=$E/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed
curl -s -X POST -H 'Content-Type: application/json' -d '{}' -o "$WORK/cat.json" "$CAT"
echo "catalog: $(stat -c %s "$WORK/cat.json") bytes; after the miss: $(mem "$EDGE_PID")" >&2
# RSS every 0.2 s while the readers run; the highest sample is the peak.
(while kill -0 "$EDGE_PID" 2>/dev/null; do echo "$(field "$EDGE_PID" VmRSS) $(rss "$EDGE_PID")"; sleep 0.2; done) >"$WORK/rss.txt" &
(while kill -0 "$EDGE_PID" 2>/dev/null; do field "$EDGE_PID" RssAnon; echo; sleep 0.2; done) >"$WORK/anon.txt" &
ANON=$!
SAMPLER=$!
wrk -t2 -c100 -d"$DURATION" --timeout 10s --latency -s wrk.lua "$CAT" >"$WORK/wrk.txt"
kill "$SAMPLER" "$ANON"; wait "$SAMPLER" "$ANON" 2>/dev/null || true
# wrk.lua's RESULT line: req/s p50 p99 max non-2xx errors; a run with
# failed answers is not a throughput.
ok() { awk '$1 == "RESULT" { if ($6 + $7 > 0) printf "%s (%d failed)", $2, $6 + $7; else printf "%s", $2 }' "$1"; }
PEAK=$(sort -n "$WORK/rss.txt" | tail -1 | cut -d' ' -f2-)
PEAKANON=$(sort -n "$WORK/anon.txt" | tail -1)
echo "| $(basename "$EDGE_BIN") | ${ROUND:-1} | $IDLE10 | $IDLE150 | $IDLE150RSS | $(ok "$WORK/wrk-small.txt") | $(ok "$WORK/wrk.txt") | $PEAKANON | $PEAK | $(field "$EDGE_PID" VmHWM) |"
