#!/usr/bin/env bash
# make cluster-faults: the cluster under Redis faults, before and after, in
# one run. Runs the integration tests TestClusterFault* (three real nodes,
# real redis-server, s360sim; see integration/faults_test.go) twice: once
# against an s360edge built from BEFORE (a commit, default the last one
# without the durable changes and renewed leases), once against this tree.
# The simulator and the tests are this tree's in both runs. Each test logs
# a FAULT line (time until every node serves the change, catalog calls per
# key, 509s); they are collected into the "faults" table of ../BENCHMARKS.md
# (between its cluster-faults-redis markers). A test failing against BEFORE
# is expected: that is what the table shows.
#
#   BEFORE=<commit> ./cluster-faults.sh
set -uo pipefail
cd "$(dirname "$0")"
BENCH=$PWD
ROOT=$(cd .. && pwd)
BEFORE=${BEFORE:-47fd6bc}
WORK=$BENCH/work-faults
GO=${GO:-go}
command -v redis-server >/dev/null || { echo "cluster-faults.sh needs redis-server (apt-get install redis-server)" >&2; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"

echo "== building s360edge at $BEFORE"
git -C "$ROOT" worktree add --detach "$WORK/before-src" "$BEFORE" >/dev/null || exit 1
trap 'git -C "$ROOT" worktree remove --force "$WORK/before-src" 2>/dev/null' EXIT
(cd "$WORK/before-src" && $GO build -o "$WORK/s360edge-before" ./cmd/s360edge) || exit 1
BEFORE_DESC=$(git -C "$ROOT" log -1 --format='%h %s' "$BEFORE" | cut -c1-60)
AFTER_DESC=$(git -C "$ROOT" log -1 --format='%h' HEAD)

run() { # run NAME [env...]: the fault tests, their FAULT lines into $WORK/NAME.faults
	local name=$1
	shift
	echo "== fault tests against $name"
	(cd "$ROOT" && env "$@" $GO test -count=1 -timeout 20m -v -run 'TestClusterFault' ./integration/) >"$WORK/$name.log" 2>&1
	grep -o 'FAULT fault=.*' "$WORK/$name.log" >"$WORK/$name.faults"
	grep -E '^(--- |ok|FAIL)' "$WORK/$name.log"
}
run before S360EDGE_TEST_BINARY="$WORK/s360edge-before"
run after

# field LINE KEY: the value of key="..." or key=n in a FAULT line
field() { sed -E "s/.* $2=(\"([^\"]*)\"|([^ ]*)).*/\2\3/" <<<"$1"; }
{
	echo "<!-- cluster-faults-redis:begin -->"
	echo "### Redis faults during a change (\`make cluster-faults\`, $(date -u +%Y-%m-%d))"
	echo
	echo "\`integration/faults_test.go\`: three nodes (\`setup_poll 1s\`, heartbeat 1 s), one Redis, two catalog keys"
	echo "cached on every node; Redis misbehaves as the setup changes. *agree*: from the fault's end until every"
	echo "node serves the new catalog for both keys (the promise: heartbeat + poll + 3 s margin, 5 s); *calls*:"
	echo "\`getCatalogDetailed\` calls the change cost (one per key is right); 509: the simulator's refusals."
	echo "*before*: \`$BEFORE_DESC\`; *after*: \`$AFTER_DESC\`. Same simulator and tests. Machine: $(nproc) cores,"
	echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end. The lease row does not tell the builds apart: the"
	echo "older one's lease lasted the call's timeout plus 10 s (70 s by default), longer than the 14 s call; a lease"
	echo "outlived by a wait in the budget is shown by package edge's TestClusterFlightWaitingInTheBudgetKeepsItsLease."
	echo
	echo "| fault | before: agree | before: calls (keys) | before: 509 | after: agree | after: calls (keys) | after: 509 |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	while IFS= read -r line; do
		f=$(field "$line" fault)
		b=$(grep -F "fault=\"$f\"" "$WORK/before.faults" | head -1)
		row="| $f |"
		for l in "$b" "$line"; do
			if [ -z "$l" ]; then row+=" (no figure) | | |"; continue; fi
			row+=" $(field "$l" agree) | $(field "$l" catalog_calls) ($(field "$l" keys)) | $(field "$l" 509) |"
		done
		echo "$row"
	done <"$WORK/after.faults"
	echo "<!-- cluster-faults-redis:end -->"
} >"$WORK/report.md"
cat "$WORK/report.md"

md=$ROOT/BENCHMARKS.md
if grep -q '<!-- cluster-faults-redis:begin -->' "$md"; then
	awk -v rep="$WORK/report.md" '
		/<!-- cluster-faults-redis:begin -->/ { while ((getline l < rep) > 0) print l; skip = 1; next }
		/<!-- cluster-faults-redis:end -->/ { skip = 0; next }
		!skip { print }' "$md" >"$md.new"
else
	awk -v rep="$WORK/report.md" '
		/<!-- cluster-faults:end -->/ { while ((getline l < rep) > 0) print l; print ""; }
		{ print }' "$md" >"$md.new"
fi
mv "$md.new" "$md"
echo "== BENCHMARKS.md updated"
