#!/usr/bin/env bash
# make bench: the performance evidence of the targets in BENCHMARKS.md's
# summary (hit vs a static handler, coalesced misses, the 10 MB catalog,
# restart). Builds the binaries into bench/bin, runs them on free loopback
# ports, drives them with wrk and small Go clients, stops every process by
# its PID and rewrites the "bench" section of ../BENCHMARKS.md.
#
# With BEFORE=<commit>, benchcaddy is also built from that commit (a git
# worktree in a temporary directory, removed at exit) and run beside this
# tree's: the hit rounds (1-2) measure both builds' hit and static sites in
# the same rounds, order alternated, and report each build's hit / static;
# item 6 runs the Go benchmarks in both trees.
#
#   ROUNDS=3 DURATION=10s CONNS=50 THREADS=2 [BEFORE=<commit>] ./run.sh
set -euo pipefail
cd "$(dirname "$0")"
BENCH=$PWD
ROOT=$(cd .. && pwd)
BIN=$BENCH/bin
WORK=$BENCH/work
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
GO=${GO:-go}
BEFORE=${BEFORE:-}
OUT=$WORK/report.md

rm -rf "$WORK"
mkdir -p "$BIN" "$WORK"

# ---------------------------------------------------------------- build
echo "== building"
(cd "$ROOT" && $GO build -o "$BIN/s360edge" ./cmd/s360edge && $GO build -o "$BIN/s360sim" ./cmd/s360sim)
$GO build -o "$BIN/benchcaddy" ./cmd/benchcaddy
$GO build -o "$BIN/misses" ./cmd/misses
$GO build -o "$BIN/freeport" ./cmd/freeport
$GO build -o "$BIN/mdsection" ./cmd/mdsection
CH_BUILD="built"
if ! (cd cmd/cachehandler && $GO build -o "$BIN/cachehandler" .) >"$WORK/cachehandler-build.log" 2>&1; then
	CH_BUILD="FAILED: $(tail -5 "$WORK/cachehandler-build.log" | tr '\n' ' ')"
	rm -f "$BIN/cachehandler"
fi
# BEFORE: the older tree's benchcaddy (its bench module builds against that
# tree through its own `replace => ../`).
BEFORE_SRC=
remove_before() {
	[ -n "$BEFORE_SRC" ] || return 0
	git -C "$ROOT" worktree remove --force "$BEFORE_SRC" 2>/dev/null || true
	rm -rf "$(dirname "$BEFORE_SRC")"
}
if [ -n "$BEFORE" ]; then
	echo "== building benchcaddy at $BEFORE"
	git -C "$ROOT" cat-file -e "$BEFORE:bench/cmd/benchcaddy/main.go" 2>/dev/null || { echo "BEFORE=$BEFORE: no bench/cmd/benchcaddy in that commit" >&2; exit 1; }
	BEFORE_SRC=$(mktemp -d)/src
	trap remove_before EXIT
	git -C "$ROOT" worktree add --detach "$BEFORE_SRC" "$BEFORE" >/dev/null
	(cd "$BEFORE_SRC/bench" && $GO build -o "$BIN/benchcaddy-before" ./cmd/benchcaddy)
	BEFORE_DESC=$(git -C "$ROOT" log -1 --format='%h (%cs)' "$BEFORE")
fi

# ---------------------------------------------------------------- processes
source ./lib.sh
trap 'cleanup; remove_before' EXIT
sim_total() { curl -s "$1/_sim/counters" | jq .total; }
rss() { grep -E "^$2:" "/proc/$1/status" | awk '{printf "%.1f", $2/1024}'; } # PID VmRSS|VmHWM -> MiB

mapfile -t PORTS < <("$BIN/freeport" 15)
read -r P_SIM P_ADMIN P_S360 P_STATIC P_CHADMIN P_CH P_SIM2 P_EDGE P_EADMIN P_SIM3 P_STATIC2 P_SADMIN2 P_BADMIN P_BS360 P_BSTATIC <<<"${PORTS[*]}"
API=/tnseb/backend-apis
AVAIL=$API/availabilityService/v1_33/getEventAvailability
CATALOG=$API/catalogService/v1_33/getCatalogDetailed
POSCONF=$API/catalogService/v1_33/getPOSConfig
LOAD_START=$(load)

# ======================================================= 1-2. hit vs baselines
echo "== 1-2: hit vs static_bytes vs cache-handler"
SIM=http://127.0.0.1:$P_SIM
start sim1 "$BIN/s360sim" -addr "127.0.0.1:$P_SIM" -products 280
SIM1_PID=$LAST_PID
wait_up "$SIM/_sim/fixtures"
curl -s "$SIM/_sim/fixtures" >"$WORK/fixtures.json"
POS=$(jq .posId "$WORK/fixtures.json")
# ~2 KB: the availability of 26 performances.
BODY_2k="{\"pointOfSalesId\":$POS,\"performanceIds\":$(jq -c '[.products[:26][].performances[0].id]' "$WORK/fixtures.json")}"
BODY_1m='{}'
PATH_2k=$AVAIL
PATH_1m=$CATALOG

export ADMIN_PORT=$P_ADMIN S360_PORT=$P_S360 STATIC_PORT=$P_STATIC SIM_URL=$SIM WORK CH_ADMIN_PORT=$P_CHADMIN CH_PORT=$P_CH
: >"$WORK/body-2k.json"
: >"$WORK/body-1m.json"
start benchcaddy "$BIN/benchcaddy" run --config Caddyfile.hit --adapter caddyfile
BC_PID=$LAST_PID
wait_up "http://127.0.0.1:$P_S360/"
# The bodies come from the sidecar (a miss that stores them), then the
# static site is reloaded to serve exactly those bytes.
for s in 2k 1m; do
	p=PATH_$s b=BODY_$s
	post "http://127.0.0.1:$P_S360${!p}" "${!b}" "$WORK/body-$s.json" "$WORK/miss-$s.hdr" >/dev/null
	grep -qi 'fwd=miss' "$WORK/miss-$s.hdr" || { echo "warm-up of $s was not a miss" >&2; cat "$WORK/miss-$s.hdr" >&2; exit 1; }
done
env HOME="$WORK" "$BIN/benchcaddy" reload --force --config Caddyfile.hit --adapter caddyfile --address "127.0.0.1:$P_ADMIN" >"$WORK/reload.log" 2>&1
SIZE_2k=$(stat -c %s "$WORK/body-2k.json")
SIZE_1m=$(stat -c %s "$WORK/body-1m.json")

TARGETS="static s360"
URL_static=http://127.0.0.1:$P_STATIC
URL_s360=http://127.0.0.1:$P_S360
URL_cachehandler=http://127.0.0.1:$P_CH
if [ -x "$BIN/cachehandler" ]; then
	start cachehandler "$BIN/cachehandler" run --config Caddyfile.cachehandler --adapter caddyfile
	CH_PID=$LAST_PID
	wait_up "$URL_cachehandler/"
	TARGETS="static s360 cachehandler"
fi
# The older build: its own process, admin and store, the same Caddyfile and
# simulator, its static site serving the same saved bodies (read at start).
# Its cache is warmed by the first request of the checks below, for which
# the simulator's per-request floors are turned off (this tree's sidecar has
# just made the same calls; no call reaches it during the measured rounds).
URL_before_static=http://127.0.0.1:$P_BSTATIC
URL_before_s360=http://127.0.0.1:$P_BS360
BEFORE_TARGETS=
if [ -n "$BEFORE" ]; then
	curl -fs -X POST -d '{"catalogFloor":"0s","availabilityFloor":"0s"}' "$SIM/_sim/faults" >/dev/null
	start benchcaddy-before env ADMIN_PORT="$P_BADMIN" S360_PORT="$P_BS360" STATIC_PORT="$P_BSTATIC" \
		HIT_STORE=store-hit-before XDG_DATA_HOME="$WORK/data-before" \
		"$BIN/benchcaddy-before" run --config Caddyfile.hit --adapter caddyfile
	BB_PID=$LAST_PID
	wait_up "$URL_before_s360/"
	BEFORE_TARGETS=" before_static before_s360"
	TARGETS+=$BEFORE_TARGETS
fi

# Every target must answer the same bytes, and the caches must hit.
CHECKS=""
for s in 2k 1m; do
	p=PATH_$s b=BODY_$s
	for t in $TARGETS; do
		u=URL_$t
		post "${!u}${!p}" "${!b}" "$WORK/check-$t-$s.json" "$WORK/check-$t-$s.hdr" >/dev/null # warms cache-handler
		post "${!u}${!p}" "${!b}" "$WORK/check-$t-$s.json" "$WORK/check-$t-$s.hdr" >/dev/null
		cmp -s "$WORK/check-$t-$s.json" "$WORK/body-$s.json" || { echo "$t $s: body differs" >&2; exit 1; }
		cs=$(hdr Cache-Status "$WORK/check-$t-$s.hdr")
		case $t in
		s360 | before_s360) [[ $cs == "s360edge; hit"* ]] || { echo "$t $s not a hit: $cs" >&2; exit 1; } ;;
		cachehandler) [[ $cs == *hit* ]] || { echo "cache-handler $s not a hit: $cs" >&2; exit 1; } ;;
		esac
		CHECKS+="| $s | $t | $(hdr Content-Type "$WORK/check-$t-$s.hdr") | $(hdr Content-Length "$WORK/check-$t-$s.hdr") | ${cs:--} |"$'\n'
	done
done
RID_BODY="{\"requestId\":\"check-1\",${BODY_2k:1}"
for t in s360${BEFORE:+ before_s360}; do
	u=URL_$t
	post "${!u}$PATH_2k" "$RID_BODY" "$WORK/check-$t-2kr.json" "$WORK/check-$t-2kr.hdr" >/dev/null
	cmp -s "$WORK/check-$t-2kr.json" "$WORK/body-2k.json" || { echo "$t 2kr: body differs" >&2; exit 1; }
	cs=$(hdr Cache-Status "$WORK/check-$t-2kr.hdr")
	[[ $cs == "s360edge; hit"* ]] || { echo "$t 2kr not a hit: $cs" >&2; exit 1; }
	CHECKS+="| 2kr | $t | $(hdr Content-Type "$WORK/check-$t-2kr.hdr") | $(hdr Content-Length "$WORK/check-$t-2kr.hdr") | $cs |"$'\n'
done
SIM_BEFORE=$(sim_total "$SIM")

# 2kr: the 2k request with a unique requestId in every body (WRK_RID=1).
PATH_2kr=$PATH_2k BODY_2kr=$BODY_2k SIZE_2kr=$SIZE_2k
TARGETS_2k=$TARGETS TARGETS_1m=$TARGETS TARGETS_2kr="static s360$BEFORE_TARGETS"
RID_2k=0 RID_2kr=1 RID_1m=0
# The server's CPU time (utime + stime of its process) per request in each
# round: less sensitive than req/s to what else runs on the cores.
declare -A RPS P50 P99 CPU PID_OF=([static]=$BC_PID [s360]=$BC_PID [cachehandler]=${CH_PID:-} [before_static]=${BB_PID:-} [before_s360]=${BB_PID:-})
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # PID -> utime + stime, in clock ticks
ROWS=""
for s in 2k 2kr 1m; do
	p=PATH_$s b=BODY_$s tg=TARGETS_$s rid=RID_$s
	for r in $(seq 1 "$ROUNDS"); do
		order=${!tg}
		[ $((r % 2)) -eq 0 ] && order=$(echo "${!tg}" | tr ' ' '\n' | tac | tr '\n' ' ')
		for t in $order; do
			u=URL_$t
			l=$(load)
			echo "   $s round $r $t (load $l)"
			ticks=$(cpu_ticks "${PID_OF[$t]}")
			res=$(WRK_BODY=${!b} WRK_RID=${!rid} wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 10s --latency -s wrk.lua "${!u}${!p}" | tee "$WORK/wrk-$s-$t-$r.txt" | grep '^RESULT')
			ticks=$(($(cpu_ticks "${PID_OF[$t]}") - ticks))
			reqs=$(awk '/ requests in / {print $1}' "$WORK/wrk-$s-$t-$r.txt")
			cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", (n > 0 ? 1e6 * t / hz / n : 0)}')
			read -r _ rps p50 p99 mx non2xx sockerr <<<"$res"
			RPS[$s,$t]+="$rps "
			P50[$s,$t]+="$p50 "
			P99[$s,$t]+="$p99 "
			CPU[$s,$t]+="$cpu "
			ROWS+="| $s | $t | $r | $rps | $p50 | $p99 | $mx | $non2xx | $sockerr | $cpu | $l |"$'\n'
		done
	done
done
SIM_AFTER=$(sim_total "$SIM")

SUMMARY=""
declare -A MED
for s in 2k 2kr 1m; do
	tg=TARGETS_$s
	for t in ${!tg}; do
		# shellcheck disable=SC2086
		MED[$s,$t]=$(median ${RPS[$s,$t]})
	done
done
for s in 2k 2kr 1m; do
	size=SIZE_$s tg=TARGETS_$s
	st=${MED[$s,static]} sh=${MED[$s,s360]}
	ratio=$(awk -v a="$sh" -v b="$st" 'BEGIN {printf "%.1f", 100*a/b}')
	met=$(awk -v a="$sh" -v b="$st" 'BEGIN {print (a >= 0.9*b) ? "met" : "**missed**"}')
	line="| $s (${!size} B) | $st | $(median ${P50[$s,static]}) / $(median ${P99[$s,static]}) | $sh | $(median ${P50[$s,s360]}) / $(median ${P99[$s,s360]}) | **$ratio %** ($met)"
	if [[ ${!tg} == *cachehandler* ]]; then
		ch=${MED[$s,cachehandler]}
		line+=" | $ch | $(median ${P50[$s,cachehandler]}) / $(median ${P99[$s,cachehandler]}) | $(awk -v a="$ch" -v b="$st" 'BEGIN {printf "%.1f %%", 100*a/b}')"
	else
		line+=" | n/a | n/a | n/a"
	fi
	SUMMARY+="$line |"$'\n'
done
# Each build's hit over its own static site, and the hit of after over before.
BA_SUMMARY=""
if [ -n "$BEFORE" ]; then
	for s in 2k 2kr 1m; do
		size=SIZE_$s
		for b in before after; do
			st=static sh=s360
			[ $b = before ] && st=before_static sh=before_s360
			ratio=$(awk -v a="${MED[$s,$sh]}" -v b="${MED[$s,$st]}" 'BEGIN {printf "%.1f", 100*a/b}')
			met=$(awk -v a="${MED[$s,$sh]}" -v b="${MED[$s,$st]}" 'BEGIN {print (a >= 0.9*b) ? "met" : "**missed**"}')
			cst=$(median ${CPU[$s,$st]}) csh=$(median ${CPU[$s,$sh]})
			BA_SUMMARY+="| $s (${!size} B) | $b | ${MED[$s,$st]} | $(median ${P50[$s,$st]}) / $(median ${P99[$s,$st]}) | ${MED[$s,$sh]} | $(median ${P50[$s,$sh]}) / $(median ${P99[$s,$sh]}) | **$ratio %** ($met) | $cst / $csh ($(awk -v a="$cst" -v b="$csh" 'BEGIN {printf "%.1f %%", 100*a/b}')) |"
			if [ $b = after ]; then
				BA_SUMMARY+=" $(awk -v a="${MED[$s,s360]}" -v b="${MED[$s,before_s360]}" 'BEGIN {printf "%.1f %%", 100*a/b}') |"$'\n'
			else
				BA_SUMMARY+=" |"$'\n'
			fi
		done
	done
fi

# Where the time goes: CPU profiles of the hit and of the baseline, 2 KB.
echo "== profiles"
PROFILES=""
for prof in ${TARGETS%"$BEFORE_TARGETS"} s360-rid; do
	t=${prof%-rid} rid=0
	[ "$prof" = s360-rid ] && rid=1
	u=URL_$t
	adm=$P_ADMIN exe=$BIN/benchcaddy
	[ "$t" = cachehandler ] && adm=$P_CHADMIN exe=$BIN/cachehandler
	WRK_BODY=$BODY_2k WRK_RID=$rid wrk -t"$THREADS" -c"$CONNS" -d12s -s wrk.lua "${!u}$PATH_2k" >/dev/null &
	WRK_PID=$!
	sleep 1
	curl -s -o "$WORK/cpu-$prof-2k.pprof" "http://127.0.0.1:$adm/debug/pprof/profile?seconds=10"
	wait "$WRK_PID"
	PROFILES+="$prof, 2 KB, top 25 by flat CPU (\`go tool pprof -top -nodecount=25 bench/bin/$(basename "$exe") cpu-$prof-2k.pprof\`):"$'\n\n```\n'
	PROFILES+="$($GO tool pprof -top -nodecount=25 "$exe" "$WORK/cpu-$prof-2k.pprof" 2>/dev/null | sed -n '4,31p')"$'\n```\n\n'
	PROFILES+="$prof, 2 KB, cumulative, selected frames (\`go tool pprof -top -cum\`, filtered):"$'\n\n```\n'
	PROFILES+="$($GO tool pprof -top -cum -nodecount=400 "$exe" "$WORK/cpu-$prof-2k.pprof" 2>/dev/null | grep -E 's360edge|souin|cache-handler|storages|caddyhttp\.\(\*Server\)\.ServeHTTP|net/http\.\(\*conn\)\.serve|encoding/json|staticbytes|runtime\.gcBgMarkWorker|syscall\.Syscall' | head -30)"$'\n```\n\n'
done
stop "$BC_PID"
[ -n "${CH_PID:-}" ] && stop "$CH_PID"
[ -n "${BB_PID:-}" ] && stop "$BB_PID"
stop "$SIM1_PID"

# ======================================================= 3. 1,000 identical misses
echo "== 3: 1,000 concurrent identical misses"
SIM2=http://127.0.0.1:$P_SIM2
start sim2 "$BIN/s360sim" -addr "127.0.0.1:$P_SIM2" -latency 1s
SIM2_PID=$LAST_PID
wait_up "$SIM2/_sim/fixtures"
POS2=$(curl -s "$SIM2/_sim/fixtures" | jq .posId)
PERF2=$(curl -s "$SIM2/_sim/fixtures" | jq '.products[0].performances[0].id')
export EDGE_PORT=$P_EDGE ADMIN_PORT=$P_EADMIN SIM_URL=$SIM2 STORE=store-misses
start edge-misses "$BIN/s360edge" run --config Caddyfile.edge --adapter caddyfile
EDGE_PID=$LAST_PID
wait_up "http://127.0.0.1:$P_EDGE/"
# One call first so that the token is held and the storm costs one call.
post "http://127.0.0.1:$P_EDGE$POSCONF" '{}' /dev/null /dev/null >/dev/null
MISS_BODY="{\"pointOfSalesId\":$POS2,\"performanceIds\":[$PERF2]}"
MISSES=$("$BIN/misses" -edge "http://127.0.0.1:$P_EDGE" -sim "$SIM2" -n 1000 -body "$MISS_BODY")
MISSES_LOAD=$(load)
stop "$EDGE_PID"
stop "$SIM2_PID"

# ======================================================= 4-5. 10 MB catalog, restart
echo "== 4-5: 10 MB catalog, restart"
SIM3=http://127.0.0.1:$P_SIM3
start sim3 "$BIN/s360sim" -addr "127.0.0.1:$P_SIM3" -products 3000
SIM3_PID=$LAST_PID
wait_up "$SIM3/_sim/fixtures"
export SIM_URL=$SIM3 STORE=store-big
start edge-big-1 "$BIN/s360edge" run --config Caddyfile.edge --adapter caddyfile
EDGE_PID=$LAST_PID
E=http://127.0.0.1:$P_EDGE
wait_up "$E/"
read -r T_MISS_CAT C_MISS_CAT < <(post "$E$CATALOG" '{}' "$WORK/cat.json" "$WORK/cat-miss.hdr")
read -r T_MISS_POS _ < <(post "$E$POSCONF" '{}' /dev/null "$WORK/pos-miss.hdr")
CAT_SIZE=$(stat -c %s "$WORK/cat.json")
CS_MISS_CAT=$(hdr Cache-Status "$WORK/cat-miss.hdr")
stop "$EDGE_PID"

BEFORE_RESTART=$(curl -s "$SIM3/_sim/counters" | jq -c '{total, calls}')
start edge-big-2 "$BIN/s360edge" run --config Caddyfile.edge --adapter caddyfile
EDGE_PID=$LAST_PID
wait_up "$E/"
RSS_START=$(rss "$EDGE_PID" VmRSS)
read -r T_HIT_CAT C_HIT_CAT < <(post "$E$CATALOG" '{}' "$WORK/cat-hit.json" "$WORK/cat-hit.hdr")
read -r T_HIT_POS C_HIT_POS < <(post "$E$POSCONF" '{}' /dev/null "$WORK/pos-hit.hdr")
read -r T_HIT2_CAT _ < <(post "$E$CATALOG" '{}' /dev/null "$WORK/cat-hit2.hdr")
AFTER_RESTART=$(curl -s "$SIM3/_sim/counters" | jq -c '{total, calls}')
cmp -s "$WORK/cat.json" "$WORK/cat-hit.json" && SAME_CAT=yes || SAME_CAT=NO
RSS_IDLE=$(rss "$EDGE_PID" VmRSS)
heap() { curl -s "http://127.0.0.1:$1/debug/vars" | jq -r '.memstats | "HeapInuse \(.HeapInuse/1048576*10|floor/10) MiB, HeapSys \(.HeapSys/1048576*10|floor/10) MiB, NumGC \(.NumGC)"'; }
HEAP_IDLE=$(heap "$P_EADMIN")

# Baseline: benchcaddy serving the same 10 MB from memory (static_bytes).
start static-10m env ADMIN_PORT="$P_SADMIN2" STATIC_PORT="$P_STATIC2" STATIC_FILE="$WORK/cat.json" \
	"$BIN/benchcaddy" run --config Caddyfile.static --adapter caddyfile
STATIC10_PID=$LAST_PID
S10=http://127.0.0.1:$P_STATIC2
wait_up "$S10/"
post "$S10$CATALOG" '{}' "$WORK/cat-static.json" /dev/null >/dev/null
cmp -s "$WORK/cat.json" "$WORK/cat-static.json" || { echo "static 10 MB body differs" >&2; exit 1; }
S_RSS_IDLE=$(rss "$STATIC10_PID" VmRSS)

declare -A PID_10=([s360]=$EDGE_PID [static]=$STATIC10_PID) URL_10=([s360]=$E [static]=$S10)
ROWS_10=""
for r in $(seq 1 "$ROUNDS"); do
	order="static s360"
	[ $((r % 2)) -eq 0 ] && order="s360 static"
	for t in $order; do
		l=$(load)
		echo "   10 MB round $r $t (load $l)"
		wrk -t"$THREADS" -c100 -d15s --timeout 10s --latency -s wrk.lua "${URL_10[$t]}$CATALOG" >"$WORK/wrk-10mb-$t-$r.txt" &
		WRK_PID=$!
		samples=""
		while kill -0 "$WRK_PID" 2>/dev/null; do
			sleep 1
			samples+="$(rss "${PID_10[$t]}" VmRSS) "
		done
		wait "$WRK_PID"
		read -r _ rps p50 p99 mx non2xx sockerr <<<"$(grep '^RESULT' "$WORK/wrk-10mb-$t-$r.txt")"
		RPS[10m,$t]+="$rps "
		P50[10m,$t]+="$p50 "
		P99[10m,$t]+="$p99 "
		ROWS_10+="| $t | $r | $rps | $p50 | $p99 | $mx | $non2xx | $sockerr | $(rss "${PID_10[$t]}" VmHWM) | $samples | $l |"$'\n'
	done
done
HEAP_AFTER=$(heap "$P_EADMIN")
RSS_AFTER=$(rss "$EDGE_PID" VmRSS)
HWM_AFTER=$(rss "$EDGE_PID" VmHWM)
S_HWM_AFTER=$(rss "$STATIC10_PID" VmHWM)
TOTAL_AFTER_LOAD=$(sim_total "$SIM3")
stop "$STATIC10_PID"
stop "$EDGE_PID"
stop "$SIM3_PID"

# ======================================================= 6. Go benchmarks
echo "== 6: go test -bench"
GOBENCH=$(cd "$ROOT" && $GO test -run '^$' -bench . -benchmem -count 1 ./s360/ ./edge/ ./cachestore/ 2>&1) || true
GOBENCH_BEFORE=
if [ -n "$BEFORE" ]; then
	GOBENCH_BEFORE=$(cd "$BEFORE_SRC" && $GO test -run '^$' -bench . -benchmem -count 1 ./s360/ ./edge/ ./cachestore/ 2>&1) || true
fi
LOAD_END=$(load)

# ======================================================= report
CAT_MIB=$(awk -v b="$CAT_SIZE" 'BEGIN {printf "%.1f", b/1048576}')
{
	echo "## make bench — results"
	echo
	echo "Generated by \`make bench\` (bench/run.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr). $($GO version | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2). Commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted paths)${BEFORE:+; before: commit $BEFORE_DESC, in the hit rounds (1-2) and the Go benchmarks (6)}. Load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END; other builds may share the 2 cores, so compare columns of one run only."
	echo
	echo "### 1-2. Cache hit vs static bytes from memory vs cache-handler"
	echo
	echo "One binary, \`bench/bin/benchcaddy\` (Caddy v2.11.9 standard modules + s360edge + the bench-only \`http.handlers.static_bytes\`), config \`bench/Caddyfile.hit\`: site \`s360\` in front of \`s360sim -products 280\` (cache warmed, every measured request a hit) and site \`static_bytes\` serving the body saved from the sidecar's answer, on the same paths. Reference: \`bench/bin/cachehandler\` (Caddy v2.11.9 + caddyserver/cache-handler v0.16.0, its own module in bench/cmd/cachehandler, build: $CH_BUILD), config \`bench/Caddyfile.cachehandler\`, \`cache\` + \`reverse_proxy\` to the static site as origin, Souin's default in-memory storage, \`allowed_http_verbs GET POST\`."
	echo
	echo "Each round, per body: \`WRK_BODY='<body>' wrk -t$THREADS -c$CONNS -d$DURATION --timeout 10s --latency -s bench/wrk.lua http://127.0.0.1:<port><path>\` against each target in turn (order reversed in even rounds), $ROUNDS rounds. 2k: POST \`$PATH_2k\` with \`{\"pointOfSalesId\":…,\"performanceIds\":[26 ids]}\` (the same bytes every time); 2kr: the same request with a unique \`\"requestId\"\` in every body (\`WRK_RID=1\`; same cache key, new raw body each time; static and s360 only: cache-handler keys on the raw body); 1m: POST \`$PATH_1m\` with \`{}\`. Simulator API calls during the measured runs: $((SIM_AFTER - SIM_BEFORE)) (all hits)."
	echo
	echo "Checked before the runs (second request of each; bodies byte-identical to the saved body):"
	echo
	echo "| body | target | Content-Type | Content-Length | Cache-Status |"
	echo "| --- | --- | --- | --- | --- |"
	printf '%s' "$CHECKS"
	echo
	echo "Medians of the rounds (req/s; latency p50 / p99 in ms; ratio = hit / static):"
	echo
	echo "| body | static req/s | static p50/p99 | s360 hit req/s | s360 p50/p99 | s360 / static (target ≥ 90 %) | cache-handler req/s | cache-handler p50/p99 | cache-handler / static |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$SUMMARY"
	echo
	if [ -n "$BEFORE" ]; then
		echo "Before and after in the same rounds: *before* is \`bench/bin/benchcaddy-before\`, built from commit $BEFORE_DESC (a git worktree of it, its bench module against its own tree), a second process with its own admin port and store (\`store-hit-before\`), the same \`bench/Caddyfile.hit\` and simulator, its static site serving the same saved bodies; *after* is this tree's \`bench/bin/benchcaddy\` (the rows above). Targets \`before_static\` and \`before_s360\` in the rounds below. Medians (req/s; p50 / p99 ms):"
		echo
		echo "| body | build | static req/s | static p50/p99 | s360 hit req/s | s360 p50/p99 | hit / static of the same build (target ≥ 90 %) | server CPU µs per request, static / hit (static over hit) | hit after / hit before |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		printf '%s' "$BA_SUMMARY"
		echo
	fi
	echo "All rounds (server CPU µs/req: the utime + stime of the serving process, from /proc/PID/stat, during the round, over the requests wrk completed; static and s360 are one process, the other site idle meanwhile):"
	echo
	echo "| body | target | round | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | server CPU µs/req | load before |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS"
	echo
	echo "<details><summary>CPU profiles (Caddy admin /debug/pprof/profile?seconds=10 during a 12 s wrk run, 2 KB; s360-rid = with a unique requestId per request)</summary>"
	echo
	printf '%s' "$PROFILES"
	echo "</details>"
	echo
	echo "### 3. 1,000 concurrent identical misses, simulator \`-latency 1s\`"
	echo
	echo "\`bench/bin/s360edge\` (the product binary, \`bench/Caddyfile.edge\`) in front of \`s360sim -latency 1s\`; one getPOSConfig call first so the token is held; then \`bench/bin/misses -n 1000 -body '$MISS_BODY'\` (1,000 goroutines, own connections, released together). Load after: $MISSES_LOAD."
	echo
	echo "| | |"
	echo "| --- | --- |"
	echo "$MISSES"
	echo
	echo "### 4. 10 MB catalog hit, 100 concurrent readers"
	echo
	echo "\`s360sim -products 3000\`; getCatalogDetailed answer $CAT_SIZE B ($CAT_MIB MiB). Subject: the s360edge process restarted below (hits from the store's memory layer after the first one). Baseline: \`bench/bin/benchcaddy\` with \`bench/Caddyfile.static\` serving the same bytes with \`static_bytes\`. Per round and target: \`wrk -t$THREADS -c100 -d15s --timeout 10s --latency -s bench/wrk.lua http://127.0.0.1:<port>$CATALOG\`, $ROUNDS rounds, order alternated. RSS from /proc/PID/status (VmRSS sampled each second during the run; VmHWM = peak since the process started)."
	echo
	echo "| target | round | req/s | p50 ms | p99 ms | max ms | non-2xx | timeouts/socket errors (> 10 s) | VmHWM after, MiB | VmRSS each second, MiB | load before |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s' "$ROWS_10"
	echo
	echo "| | s360edge hit | static_bytes |"
	echo "| --- | --- | --- |"
	echo "| median req/s | $(median ${RPS[10m,s360]}) ($(awk -v r="$(median ${RPS[10m,s360]})" -v b="$CAT_SIZE" 'BEGIN {printf "%.0f MiB/s", r*b/1048576}')) | $(median ${RPS[10m,static]}) |"
	echo "| median p50 / p99 ms | $(median ${P50[10m,s360]}) / $(median ${P99[10m,s360]}) | $(median ${P50[10m,static]}) / $(median ${P99[10m,static]}) |"
	echo "| VmRSS before the load | $RSS_IDLE MiB (fresh process: $RSS_START MiB) | $S_RSS_IDLE MiB |"
	echo "| **peak RSS (VmHWM) after all rounds** | **$HWM_AFTER MiB = $(awk -v h="$HWM_AFTER" -v b="$CAT_SIZE" 'BEGIN {printf "%.1f", h*1048576/b}') × the body** | $S_HWM_AFTER MiB = $(awk -v h="$S_HWM_AFTER" -v b="$CAT_SIZE" 'BEGIN {printf "%.1f", h*1048576/b}') × the body |"
	echo "| growth of the peak over the fresh process | $(awk -v h="$HWM_AFTER" -v i="$RSS_START" -v b="$CAT_SIZE" 'BEGIN {printf "%+.1f MiB = %.1f × the body", h-i, (h-i)*1048576/b}') | |"
	echo "| Go heap (admin /debug/vars) before → after the load | $HEAP_IDLE → $HEAP_AFTER | |"
	echo "| 100 private copies of the body would be | $(awk -v b="$CAT_SIZE" 'BEGIN {printf "%.0f MiB", 100*b/1048576}') | |"
	echo "| simulator calls during the load | $((TOTAL_AFTER_LOAD - $(jq .total <<<"$AFTER_RESTART"))) | |"
	echo
	echo "### 5. Restart: first hit from disk"
	echo
	echo "Same store: the first process fetched the catalog (miss, $T_MISS_CAT s, HTTP $C_MISS_CAT, \`$CS_MISS_CAT\`) and getPOSConfig (miss, $T_MISS_POS s), was stopped with SIGTERM, and a new process was started on the same storage."
	echo
	echo "| | |"
	echo "| --- | --- |"
	echo "| simulator counters before the restart | \`$BEFORE_RESTART\` |"
	echo "| first request after the restart: getCatalogDetailed ($CAT_MIB MiB) | HTTP $C_HIT_CAT in **$T_HIT_CAT s**, \`$(hdr Cache-Status "$WORK/cat-hit.hdr")\`, body identical: $SAME_CAT |"
	echo "| then getPOSConfig | HTTP $C_HIT_POS in **$T_HIT_POS s**, \`$(hdr Cache-Status "$WORK/pos-hit.hdr")\` |"
	echo "| second getCatalogDetailed (memory layer) | $T_HIT2_CAT s |"
	echo "| simulator counters after | \`$AFTER_RESTART\` |"
	echo
	echo "(curl \`time_total\` on loopback, body written to a file.)"
	echo
	echo "### 6. Go benchmarks"
	echo
	echo "\`go test -run '^\$' -bench . -benchmem -count 1 ./s360/ ./edge/ ./cachestore/\`"
	echo
	echo '```'
	echo "$GOBENCH"
	echo '```'
	if [ -n "$BEFORE" ]; then
		echo
		echo "The same in the tree of commit $BEFORE_DESC, run after the above:"
		echo
		echo '```'
		echo "$GOBENCH_BEFORE"
		echo '```'
	fi
} >"$OUT"

"$BIN/mdsection" "$ROOT/BENCHMARKS.md" bench <"$OUT"
echo "== wrote the bench section of $ROOT/BENCHMARKS.md"
