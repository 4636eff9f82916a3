# Process, port and HTTP helpers of the bench scripts (run.sh, cluster.sh,
# footprint.sh), sourced after their `cd "$(dirname "$0")"`. Every process
# started here is stopped by its PID when the script exits.

PIDS=()
# start NAME CMD...: runs CMD in the background with its own HOME and data
# directories under $WORK, output in $WORK/NAME.log; sets LAST_PID.
start() {
	local name=$1
	shift
	env HOME="$WORK" XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" "$@" >"$WORK/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}
stop() { # PID: SIGTERM and wait
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
wait_up() { # URL
	for _ in $(seq 1 300); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "timed out waiting for $1" >&2
	exit 1
}
post() { # URL BODY OUTFILE HEADERFILE -> prints "time_total http_code"
	curl -s -X POST -H 'Content-Type: application/json' --data-binary "$2" -o "$3" -D "$4" \
		-w '%{time_total} %{http_code}\n' "$1"
}
hdr() { { grep -i "^$1:" "$2" || true; } | head -1 | cut -d' ' -f2- | tr -d '\r'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
