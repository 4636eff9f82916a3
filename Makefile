# s360edge. `make run` and `make test` are the two commands the README promises.
GO      ?= go
BIN     := bin
XCADDY  := $(shell jq -r .xcaddy xcaddy.json 2>/dev/null || echo v0.4.5)
CADDYV  := $(shell jq -r .caddy xcaddy.json 2>/dev/null || echo v2.11.9)

export S360_OPERATOR ?= MOSA_WEB
export S360_SECRET   ?= sim-secret
# Demo only: encrypts the buyer session cookie of `make run`.
export S360_COOKIE_KEY ?= make-run-demo-cookie-key-not-for-production
S360SIM_ADDR ?= 127.0.0.1:8081
# make run RATE_LIMIT=6: the simulator allows 6 calls a minute and the
# sidecar makes 5, so that a few bookings on the demo page show the order
# queue's waiting page.
RATE_LIMIT ?=
ifneq ($(RATE_LIMIT),)
SIM_LIMIT := -rate-limit $(RATE_LIMIT)
export S360_RATE_LIMIT := $(shell expr $(RATE_LIMIT) - 1) 1m
endif

.PHONY: all build run cluster test unit integration xcaddy fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN)/s360edge ./cmd/s360edge
	$(GO) build -o $(BIN)/s360sim ./cmd/s360sim

# Runs the simulator and the sidecar in front of it, in the foreground;
# Ctrl-C stops both.
run: build
	@mkdir -p tmp
	@test -f tmp/saml-sp.key || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=s360edge-demo-sp -keyout tmp/saml-sp.key -out tmp/saml-sp.crt 2>/dev/null
	@echo "starting s360sim on $(S360SIM_ADDR) and s360edge on 127.0.0.1:8080 only (open http://localhost:8080/ or http://127.0.0.1:8080/; admin API on localhost:2019)"
	@$(BIN)/s360sim -addr $(S360SIM_ADDR) -institution MOSA -operator $$S360_OPERATOR -secret $$S360_SECRET -saml-sp-metadata http://127.0.0.1:8080/auth/saml/metadata $(SIM_LIMIT) 2>tmp/s360sim.log & \
	sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 1 50); do curl -fs http://$(S360SIM_ADDR)/_sim/fixtures >/dev/null 2>&1 && break; sleep 0.1; done; \
	echo; echo "try:"; \
	echo "  curl -s -X POST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:8080/tnseb/backend-apis/catalogService/v1_33/getPOSConfig"; \
	echo "  curl -s -X POST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:8080/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed | head -c 600"; \
	echo "  curl -s http://$(S360SIM_ADDR)/_sim/fixtures   # ids for availability and order calls"; \
	echo "  curl -s http://$(S360SIM_ADDR)/_sim/counters   # what reached the simulator"; \
	echo "  open http://127.0.0.1:8080/auth/login?provider=saml  # log in at the shop (SAML IdP), then /auth/userinfo"; \
	echo; \
	$(BIN)/s360edge run --config Caddyfile.example --adapter caddyfile

# Three sidecars of one institution sharing one Redis (cluster mode), in the
# foreground: redis-server on 127.0.0.1:$(REDIS_PORT) (no persistence), the
# simulator, and nodes on 127.0.0.1:8080, 8082 and 8083 (admin API on
# localhost:2019, 2020, 2021), each with its own storage under tmp/cluster/.
# Logs and pid files are in tmp/cluster/. Ctrl-C stops all five.
REDIS_PORT ?= 6390
CLUSTER_PORTS := 1:8080:2019 2:8082:2020 3:8083:2021
cluster: build
	@command -v redis-server >/dev/null || { echo "make cluster needs redis-server: apt-get install redis-server"; exit 1; }
	@mkdir -p tmp/cluster
	@pids=; trap 'kill $$pids 2>/dev/null; wait; echo; echo "make cluster: stopped redis-server, s360sim and the three nodes"' EXIT; trap 'exit 130' INT TERM; \
	redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no --dir tmp/cluster >tmp/cluster/redis.log 2>&1 & \
	echo $$! >tmp/cluster/redis.pid; pids="$$pids $$!"; \
	$(BIN)/s360sim -addr $(S360SIM_ADDR) -institution MOSA -operator $$S360_OPERATOR -secret $$S360_SECRET >tmp/cluster/s360sim.log 2>&1 & \
	pids="$$pids $$!"; \
	for i in $$(seq 1 50); do curl -fs http://$(S360SIM_ADDR)/_sim/fixtures >/dev/null 2>&1 && break; sleep 0.1; done; \
	for n in $(CLUSTER_PORTS); do \
		node=$$(echo $$n | cut -d: -f1); port=$$(echo $$n | cut -d: -f2); admin=$$(echo $$n | cut -d: -f3); \
		S360_PORT=$$port S360_ADMIN=localhost:$$admin S360_STORAGE=tmp/cluster/node$$node S360_UPSTREAM=http://$(S360SIM_ADDR) \
		S360_REDIS=redis://127.0.0.1:$(REDIS_PORT)/0 XDG_DATA_HOME=tmp/cluster/node$$node-caddy \
		$(BIN)/s360edge run --config Caddyfile.cluster --adapter caddyfile >tmp/cluster/node$$node.log 2>&1 & \
		echo $$! >tmp/cluster/node$$node.pid; pids="$$pids $$!"; \
	done; \
	for admin in 2019 2020 2021; do \
		for i in $$(seq 1 100); do curl -fs localhost:$$admin/s360/stats >/dev/null 2>&1 && break; sleep 0.1; done; \
	done; \
	echo "make cluster: redis-server on 127.0.0.1:$(REDIS_PORT), s360sim on $(S360SIM_ADDR), nodes 1-3 on 127.0.0.1:8080, 8082, 8083 (admin localhost:2019, 2020, 2021); logs in tmp/cluster/"; \
	echo; echo "try:"; \
	echo "  # a catalog miss on node 1, then the same request on nodes 2 and 3: one S-360 call in all"; \
	echo "  for p in 8080 8082 8083; do curl -s -o /dev/null -D - -X POST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:\$$p/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed | grep -i cache-status; done"; \
	echo "  curl -s http://$(S360SIM_ADDR)/_sim/counters   # what reached the simulator (getLastSetupUpdate: once per 5 s in all)"; \
	echo "  for a in 2019 2020 2021; do curl -s localhost:\$$a/s360/stats | grep -o '\"cluster\":{[^}]*}'; done   # node, nodes, leader, redis_ok"; \
	echo "  kill -9 \$$(cat tmp/cluster/node1.pid)   # kill a node (the leader, if stats name it): another one polls within 2 intervals"; \
	echo "  kill -9 \$$(cat tmp/cluster/redis.pid)   # kill Redis: the nodes go on alone (mode local, redis_ok false)"; \
	echo "  redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no --daemonize yes   # Redis back: the nodes rejoin (stop it yourself: redis-cli -p $(REDIS_PORT) shutdown nosave)"; \
	echo; \
	wait

# Unit and integration tests, with the race detector. The integration tests
# build both binaries and run them as processes on free loopback ports.
# go test hides a passing test's skip message, so the browser journey's is
# repeated here (CHROMIUM is chromiumPath of integration/browser_test.go;
# with CI set that test fails instead of skipping).
CHROMIUM ?= /usr/bin/chromium
test:
	@$(GO) test -race -count=1 -timeout 18m ./...; rc=$$?; \
	if [ ! -e $(CHROMIUM) ] && [ -z "$$CI" ]; then \
		echo "make test: SKIPPED the browser journey (TestBrowserJourney): $(CHROMIUM) not found; apt-get install chromium to run it"; \
	fi; exit $$rc

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration:
	$(GO) test -race -count=1 -v -timeout 15m ./integration/

# Builds the same module with xcaddy, from xcaddy.json.
xcaddy:
	$(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY)
	XCADDY_SKIP_CLEANUP=0 $$($(GO) env GOPATH)/bin/xcaddy build $(CADDYV) \
		--output $(BIN)/s360edge-xcaddy \
		--with github.com/s360edge/s360edge@v0.0.0=./
	$(BIN)/s360edge-xcaddy list-modules | grep -x 'http.handlers.s360'

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCanonical -fuzztime 30s ./s360/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./cachestore/

clean:
	rm -rf $(BIN) tmp

# Performance evidence, in bench/ (its own Go module, so the product's go.mod
# stays clean). `make bench` runs bench/run.sh (hit vs baselines, coalescing,
# 10 MB catalog, restart, Go benchmarks; about 7 minutes); `make storm` the
# rate-limit storm at full size (about 4 minutes). Each rewrites its own section
# of BENCHMARKS.md. `make bench BEFORE=<commit>` also builds that commit's
# benchcaddy and measures its hit and static sites in the same rounds as
# this tree's (each build's hit / static in the report).
bench:
	cd bench && GO=$(GO) BEFORE=$(BEFORE) ./run.sh

storm:
	cd bench && $(GO) build -o bin/storm ./cmd/storm
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/storm -bin bench/bin -caddyfile bench/Caddyfile.storm -md BENCHMARKS.md

# The replay: a compressed day of site traffic through s360edge, no
# cache and nginx proxy_cache (Debian's nginx), one after the other; about 9
# minutes. Rewrites the "replay" section of BENCHMARKS.md and
# bench/figures/replay.svg. REPLAY_FLAGS adds flags, e.g. -caddyfile.
replay:
	cd bench && $(GO) build -o bin/replay ./cmd/replay
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/replay -bin bench/bin -caddyfile bench/Caddyfile.replay -nginx-conf bench/nginx.replay.conf \
		-md BENCHMARKS.md -svg bench/figures/replay.svg $(REPLAY_FLAGS)


# The same storm with the default rate_limit (150/min) against the
# simulator's 60/min: the adaptive limit learns it.
storm-adaptive:
	cd bench && $(GO) build -o bin/storm ./cmd/storm
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/storm -bin bench/bin -caddyfile bench/Caddyfile.storm -phases 150 -duration 4m -section storm-adaptive -md BENCHMARKS.md

# Cluster mode's costs, side by side in one run: the local hit in
# cluster mode vs single node, a fresh node's shared-tier hit, the budget's
# acquire round trip; about 3 minutes. Rewrites the "cluster" section.
bench-cluster:
	cd bench && GO=$(GO) ./cluster.sh

# The storm on three sidecars sharing one Redis, rate_limit 50/min
# for the whole cluster against the simulator's 60/min; about 3 minutes.
# Needs redis-server (Debian's package).
storm-cluster:
	cd bench && $(GO) build -o bin/storm ./cmd/storm
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/storm -bin bench/bin -caddyfile bench/Caddyfile.storm-cluster -nodes 3 -phases 50 -section storm-cluster -md BENCHMARKS.md

# The cluster under Redis faults (CLIENT PAUSE WRITE, SIGSTOP, kill during a
# publish, a call outliving a lease), before and after, in one run: the
# integration tests TestClusterFault* against an older build and this one;
# rewrites the faults table of BENCHMARKS.md. About 10 minutes. Needs
# redis-server. BEFORE=<commit> picks the older build.
cluster-faults:
	bench/cluster-faults.sh

# What the live availability streams (/s360/live) cost: one s360edge with
# no subscriber, then 10,000 (idle, a change fanning out, the fresh answer
# fanning out), then none again, in one run: RSS, CPU, goroutines. About 3
# minutes; needs a file descriptor limit above 10,000 (ulimit -n). Rewrites
# the "live" section of BENCHMARKS.md.
bench-live:
	cd bench && $(GO) build -o bin/live ./cmd/live
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/live -bin bench/bin -caddyfile bench/Caddyfile.live -md BENCHMARKS.md


# An on-sale spike: 120 buyers' orders within 5 s through s360edge
# (rate_limit 40 1m) in front of the simulator (180/min), with the order
# queue and without it, each phase against a fresh simulator and storage;
# about 4 minutes (two phases of 2 and 1.5 minutes, plus start-up). Rewrites the "onsale" section of BENCHMARKS.md.
# ONSALE_FLAGS adds flags, e.g. -buyers or -keep.
onsale:
	cd bench && $(GO) build -o bin/onsale ./cmd/onsale
	$(GO) build -o bench/bin/s360edge ./cmd/s360edge
	$(GO) build -o bench/bin/s360sim ./cmd/s360sim
	bench/bin/onsale -bin bench/bin -caddyfile bench/Caddyfile.onsale -md BENCHMARKS.md $(ONSALE_FLAGS)

.PHONY: storm storm-adaptive storm-cluster bench-cluster bench-live replay cluster-faults onsale
