#!/usr/bin/env bash
# make bench-cluster: the performance evidence of cluster mode (a local
# hit costs what it costs on one node; a budget acquire is one Redis round
# trip), side by side in one run: the local hit in cluster mode vs single
# node (wrk, one process serving both, alternating rounds), the shared-tier
# hit of a fresh node (cmd/sharedhit), and the budget's acquire round trip
# and a shared-tier read (package cluster's BenchmarkClusterAcquire and
# BenchmarkSharedTierGet). The 3-node storm is `make storm-cluster` (its
# own section).
# Rewrites the "cluster" section of ../BENCHMARKS.md.
#
#   ROUNDS=3 DURATION=10s CONNS=50 THREADS=2 ./cluster.sh
set -euo pipefail
cd "$(dirname "$0")"
BENCH=$PWD
ROOT=$(cd .. && pwd)
BIN=$BENCH/bin
WORK=$BENCH/work-cluster
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
GO=${GO:-go}
OUT=$WORK/report.md
command -v redis-server >/dev/null || { echo "cluster.sh needs redis-server (apt-get install redis-server)" >&2; exit 1; }

rm -rf "$WORK"
mkdir -p "$BIN" "$WORK"

echo "== building"
(cd "$ROOT" && $GO build -o "$BIN/s360edge" ./cmd/s360edge && $GO build -o "$BIN/s360sim" ./cmd/s360sim)
$GO build -o "$BIN/freeport" ./cmd/freeport
$GO build -o "$BIN/mdsection" ./cmd/mdsection
$GO build -o "$BIN/sharedhit" ./cmd/sharedhit

source ./lib.sh

mapfile -t PORTS < <("$BIN/freeport" 7)
read -r P_REDIS P_SIM P_ADMIN P_SINGLE P_CLUSTER P_ADMIN_B P_B <<<"${PORTS[*]}"
API=/tnseb/backend-apis
AVAIL=$API/availabilityService/v1_33/getEventAvailability
CATALOG=$API/catalogService/v1_33/getCatalogDetailed
LOAD_START=$(load)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)

start redis redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK"
REDIS_URL=redis://127.0.0.1:$P_REDIS/0
SIM=http://127.0.0.1:$P_SIM
start sim "$BIN/s360sim" -addr "127.0.0.1:$P_SIM" -products 280 -rate-limit 0 -availability-floor 0 -catalog-floor 0
wait_up "$SIM/_sim/fixtures"
curl -s "$SIM/_sim/fixtures" >"$WORK/fixtures.json"
POS=$(jq .posId "$WORK/fixtures.json")
BODY_2k="{\"pointOfSalesId\":$POS,\"performanceIds\":$(jq -c '[.products[:26][].performances[0].id]' "$WORK/fixtures.json")}"
BODY_1m='{}'
PATH_2k=$AVAIL
PATH_1m=$CATALOG

export ADMIN_PORT=$P_ADMIN SINGLE_PORT=$P_SINGLE CLUSTER_PORT=$P_CLUSTER ADMIN_B_PORT=$P_ADMIN_B B_PORT=$P_B SIM_URL=$SIM WORK REDIS_URL
start nodeA "$BIN/s360edge" run --config Caddyfile.cluster-hit --adapter caddyfile
wait_up "http://127.0.0.1:$P_SINGLE/"
wait_up "http://127.0.0.1:$P_CLUSTER/"
URL_single=http://127.0.0.1:$P_SINGLE
URL_cluster=http://127.0.0.1:$P_CLUSTER

# ======================================================= local hit
echo "== local hit: cluster vs single node"
CHECKS=""
for s in 2k 1m; do
	p=PATH_$s b=BODY_$s
	for t in single cluster; do
		u=URL_$t
		post "${!u}${!p}" "${!b}" "$WORK/miss-$t-$s.json" "$WORK/miss-$t-$s.hdr" >/dev/null
		post "${!u}${!p}" "${!b}" "$WORK/hit-$t-$s.json" "$WORK/hit-$t-$s.hdr" >/dev/null
		cs=$(hdr Cache-Status "$WORK/hit-$t-$s.hdr")
		[[ $cs == "s360edge; hit"* ]] || { echo "$t $s not a hit: $cs" >&2; exit 1; }
		CHECKS+="| $s | $t | $(hdr Content-Length "$WORK/hit-$t-$s.hdr") | $cs |"$'\n'
	done
	cmp -s "$WORK/hit-single-$s.json" "$WORK/hit-cluster-$s.json" || { echo "$s: single and cluster answers differ" >&2; exit 1; }
done
REDIS_CMDS_BEFORE=$(redis-cli -p "$P_REDIS" info stats | awk -F: '/^total_commands_processed/ {print $2+0}')
declare -A RPS P50 P99
ROWS=""
for s in 2k 1m; do
	p=PATH_$s b=BODY_$s
	for r in $(seq 1 "$ROUNDS"); do
		order="single cluster"
		[ $((r % 2)) -eq 0 ] && order="cluster single"
		for t in $order; do
			u=URL_$t
			l=$(load)
			echo "   $s round $r $t (load $l)"
			res=$(WRK_BODY=${!b} wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 10s --latency -s wrk.lua "${!u}${!p}" | tee "$WORK/wrk-$s-$t-$r.txt" | grep '^RESULT')
			read -r _ rps p50 p99 mx non2xx sockerr <<<"$res"
			RPS[$s,$t]+="$rps "
			P50[$s,$t]+="$p50 "
			P99[$s,$t]+="$p99 "
			ROWS+="| $s | $t | $r | $rps | $p50 | $p99 | $mx | $non2xx | $sockerr | $l |"$'\n'
		done
	done
done
REDIS_CMDS_AFTER=$(redis-cli -p "$P_REDIS" info stats | awk -F: '/^total_commands_processed/ {print $2+0}')
HIT_SECS=$(( ROUNDS * 2 * ${DURATION%s} ))
SUMMARY=""
for s in 2k 1m; do
	si=$(median ${RPS[$s,single]}) cl=$(median ${RPS[$s,cluster]})
	ratio=$(awk -v a="$cl" -v b="$si" 'BEGIN {printf "%.1f", 100*a/b}')
	SUMMARY+="| $s | $si | $(median ${P50[$s,single]}) / $(median ${P99[$s,single]}) | $cl | $(median ${P50[$s,cluster]}) / $(median ${P99[$s,cluster]}) | **$ratio %** |"$'\n'
done

# ======================================================= shared-tier hit
echo "== shared-tier hit: a fresh node B"
start nodeB "$BIN/s360edge" run --config Caddyfile.cluster-node --adapter caddyfile
wait_up "http://127.0.0.1:$P_B/"
for _ in $(seq 1 100); do
	curl -s "http://127.0.0.1:$P_ADMIN_B/s360/stats" | jq -e '.edges[0].cluster.redis_ok and .edges[0].cluster.nodes == 2' >/dev/null 2>&1 && break
	sleep 0.1
done
SHARED=$("$BIN/sharedhit" -a "$URL_cluster" -b "http://127.0.0.1:$P_B" -sim "$SIM" -n 300)
SIM_BEFORE=$(curl -s "$SIM/_sim/counters" | jq .total)
CAT_SHARED=$(post "http://127.0.0.1:$P_B$CATALOG" '{}' "$WORK/b-catalog.json" "$WORK/b-catalog.hdr")
CAT_LOCAL=$(post "http://127.0.0.1:$P_B$CATALOG" '{}' "$WORK/b-catalog2.json" "$WORK/b-catalog2.hdr")
SIM_AFTER=$(curl -s "$SIM/_sim/counters" | jq .total)
cmp -s "$WORK/b-catalog.json" "$WORK/hit-cluster-1m.json" || { echo "node B's catalog differs from node A's" >&2; exit 1; }

# ======================================================= budget acquire
echo "== budget acquire: BenchmarkClusterAcquire"
GOBENCH="go test -run '^\$' -bench 'BenchmarkClusterAcquire|BenchmarkSharedTierGet' -benchtime 3000x ./cluster/"
ACQUIRE=$(cd "$ROOT" && $GO test -run '^$' -bench 'BenchmarkClusterAcquire|BenchmarkSharedTierGet' -benchtime 3000x ./cluster/ 2>&1 | grep -E 'Benchmark|^ok|FAIL|SKIP|skip' || true)

{
	echo "## Cluster mode — make bench-cluster"
	echo
	echo "Generated by \`make bench-cluster\` (bench/cluster.sh) on $(date -u '+%Y-%m-%d %H:%M UTC') at commit $COMMIT; $(nproc) CPUs; load average at start $LOAD_START, at the end $(load). One redis-server (Debian's $(redis-server --version | grep -o 'v=[0-9.]*'), no persistence) on loopback; the simulator with \`-products 280 -rate-limit 0 -availability-floor 0 -catalog-floor 0\` (both handlers fetch the same catalog once). The 3-node storm is the \"make storm-cluster\" section."
	echo
	echo "### Local hit: cluster mode vs single node"
	echo
	echo "One \`s360edge\` process serves both (bench/Caddyfile.cluster-hit): a single-node s360 handler and node A of a cluster, each with its own storage; the same request bytes every time (2k: getEventAvailability of 26 performances; 1m: getCatalogDetailed of 280 products). wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds alternating the order. A local hit never touches Redis: redis-server processed $((REDIS_CMDS_AFTER - REDIS_CMDS_BEFORE)) commands during the ${HIT_SECS} s of wrk (heartbeats and the like; none per request)."
	echo
	echo "| body | single node req/s | p50 / p99 ms | cluster mode req/s | p50 / p99 ms | cluster / single |"
	echo "| --- | --- | --- | --- | --- | --- |"
	printf '%s' "$SUMMARY"
	echo
	echo "Checks before measuring (second request of each; both answers byte-identical):"
	echo
	echo "| body | handler | Content-Length | Cache-Status |"
	echo "| --- | --- | --- | --- |"
	printf '%s' "$CHECKS"
	echo
	echo "Every round:"
	echo
	echo "| body | handler | round | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | load |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
	echo
	echo "### Shared-tier hit: a fresh node reading from Redis"
	echo
	echo "Node B (bench/Caddyfile.cluster-node), a second process with an empty storage, joins the cluster; \`bench/cmd/sharedhit\` has node A fetch 300 distinct 2 KB keys, then asks node B for each twice."
	echo
	echo "$SHARED"
	echo
	echo "The 1 MB catalog on node B: first request $(awk '{printf "%.1f", $1*1000}' <<<"$CAT_SHARED") ms (\`$(hdr Cache-Status "$WORK/b-catalog.hdr")\`), second $(awk '{printf "%.1f", $1*1000}' <<<"$CAT_LOCAL") ms (\`$(hdr Cache-Status "$WORK/b-catalog2.hdr")\`); S-360 calls meanwhile: $((SIM_AFTER - SIM_BEFORE)) (curl, one request each)."
	echo
	echo "### Budget acquire and shared-tier read: Go benchmarks of package cluster"
	echo
	echo "\`$GOBENCH\` (each benchmark starts its own redis-server on loopback; p50-µs and p99-µs are the percentiles of one call: BenchmarkClusterAcquire is one acquire, one Lua script round trip; BenchmarkSharedTierGet one GetEntry, zstd and checksum included, of a 2 KB and a 1 MB entry):"
	echo
	echo '```'
	echo "${ACQUIRE:-no output}"
	echo '```'
} >"$OUT"
cat "$OUT"
"$BIN/mdsection" "$ROOT/BENCHMARKS.md" cluster <"$OUT"
echo "== wrote the cluster section of BENCHMARKS.md"
