# Outpost: `make demo` runs the whole thing locally, `make test` tests it.

SHELL      := /bin/bash
GO         ?= go
COMMIT     := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION    ?= v0.1.0-dev+$(COMMIT)
LDFLAGS    := -s -w -X main.version=$(VERSION)
BIN        := bin
CROSS      := linux/arm/6 linux/arm/7 linux/arm64 linux/riscv64 linux/amd64
FUZZTIME   ?= 15s
TESTFLAGS  ?=

export CGO_ENABLED := 0

.PHONY: install-deps all build agent relay relay-image test test-unit test-e2e demo cross lint vet fmt fuzz \
	bench bench-wire bench-relay bench-conns bench-agent bench-pods bench-streams bench-logging bench-autonomy bench-idle-pages bench-agent-workload controlplane deps clean

all: build

build: agent relay ## Build bin/outpost-agent and bin/outpost-relay for this machine.

agent:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-agent ./agent/cmd/outpost-agent

relay:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-relay ./cloud/cmd/outpost-relay

# RELAY_IMAGE, when set, is where relay-image pushes the image index
# (REGISTRY/REPOSITORY:TAG, credentials from docker login); RELAY_IMAGE_INSECURE=1
# for a plain-HTTP registry.
RELAY_IMAGE ?=
RELAY_IMAGE_INSECURE ?=

relay-image: ## The relay's container image without Docker (amd64 + arm64 OCI index) into bin/outpost-relay-image; pushed to RELAY_IMAGE when set.
	$(GO) run ./build/relayimage -out $(BIN)/outpost-relay-image -version $(VERSION) \
		$(if $(RELAY_IMAGE),-push '$(RELAY_IMAGE)') $(if $(RELAY_IMAGE_INSECURE),-insecure)

install-deps: ## Install the Debian packages builds and tests need (only the missing ones).
	@./build/install-deps.sh

# The builds' cache, as build/controlplane/build.sh computes it. Builds take
# its controlplane.lock, as the test harness does, so that two builds running
# at once (two checkouts, or make beside go test) wait for one another
# instead of writing the same files.
CACHE_DIR := $(or $(OUTPOST_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/outpost)

controlplane: ## Build (or reuse from the cache) the pinned Kubernetes control plane and metrics-server.
	@mkdir -p "$(CACHE_DIR)"
	@flock "$(CACHE_DIR)/controlplane.lock" ./build/controlplane/build.sh >/dev/null
	@flock "$(CACHE_DIR)/controlplane.lock" ./build/metricsserver/build.sh >/dev/null

# The race detector needs cgo; everything we ship is built without it.
# ./... leaves out the qemu-tagged tests: make test boots the arm64 image
# once more (image-join: join, Ready, and a pod on the image's pod network).
test: install-deps controlplane lint ## Every test, end-to-end ones included, against real components; then make image-join (the arm64 image in QEMU).
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m $(TESTFLAGS) ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -tags outpost_heapprofile -run '^TestHandler$$' ./agent/metrics/
	$(MAKE) --no-print-directory image-join ARCH=arm64

test-unit: ## Tests that need no control plane.
	CGO_ENABLED=1 $(GO) test -race -count=1 -short $(TESTFLAGS) ./...

test-e2e: controlplane
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 25m -v $(TESTFLAGS) ./test/...

demo: install-deps controlplane build ## Local control plane, relay and one agent on the sim board. Ctrl-C stops all.
	$(GO) build -o $(BIN)/outpost-demo ./test/cmd/outpost-demo
	$(BIN)/outpost-demo --bin $(BIN)

cross: ## Static, stripped, reproducible agents for every gateway architecture, with SHA-256 sums.
	@mkdir -p $(BIN)/cross
	@set -e; for t in $(CROSS); do \
		os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
		name=outpost-agent-$$os-$$arch; goarm=; \
		if [ "$$arch" = arm ]; then name=$$name-v$$arm; goarm=$$arm; fi; \
		GOOS=$$os GOARCH=$$arch GOARM=$$goarm $(GO) build -trimpath -buildvcs=false \
			-ldflags '$(LDFLAGS)' -o $(BIN)/cross/$$name ./agent/cmd/outpost-agent; \
		stat -c '%s' $(BIN)/cross/$$name | awk -v n=$$name '{printf "%-36s %6.2f MB\n", n, $$1/1e6}'; \
	done
	@cd $(BIN)/cross && sha256sum outpost-agent-* > SHA256SUMS && echo "wrote $(BIN)/cross/SHA256SUMS"

.PHONY: size size-report package image image-boot image-join image-upgrade bench-mem
BOARD      ?=
RELAY      ?=
TOKEN      ?=
# CA_CERT_HASH pins the relay CA for the image's first-boot join (sha256:HEX).
CA_CERT_HASH ?=
# UPGRADE_PUBLIC_KEY pins the key agent upgrades are signed with in the
# image's agent.yaml (what outpost-relay upgrade keygen prints).
UPGRADE_PUBLIC_KEY ?=
BENCH_IDLE ?= 120s
BENCH_RUNS ?= 1
# ARCH is the qemu image image-join, image-upgrade and bench-mem boot: arm64 (CI) or riscv64;
# BENCH_DOC the Markdown file whose marked section it rewrites.
ARCH       ?= arm64
BENCH_DOC  ?= docs/benchmarks.md
# FAULT_AROUND=BYTES boots bench-mem's guest with that fault_around_bytes
# (4096: the kernel maps only the page a process faults on); its figures
# go to bin/bench-mem-ARCH-faultaround.json, and the test writes no doc section.
FAULT_AROUND ?=

size: ## Agent size per architecture against build/cross/budget.json; two builds must be byte-identical; docs/agent-size.md must be current.
	$(GO) test -count=1 -v -run 'TestSizeBudget|TestReproducible' ./build/cross/
	$(GO) test -count=1 -run 'TestSizeReport' ./build/sizes/

size-report: ## Rewrite docs/agent-size.md, the arm64 agent's bytes by package.
	$(GO) test -count=1 -run 'TestSizeReport' ./build/sizes/ -update

package: ## A .deb per gateway architecture into bin/packages, built without root, with SHA-256 sums.
	$(GO) run ./build/package -out $(BIN)/packages -version $(VERSION)

image: ## Flashable disk image without root: make image BOARD=rpi4 RELAY=https://HOST:PORT TOKEN=ID.SECRET [CA_CERT_HASH=sha256:HEX] [UPGRADE_PUBLIC_KEY=BASE64]
	@./build/install-deps.sh image
	$(GO) run ./build/image -board '$(BOARD)' -relay '$(RELAY)' -token '$(TOKEN)' -ca-cert-hash '$(CA_CERT_HASH)' -upgrade-public-key '$(UPGRADE_PUBLIC_KEY)' -version $(VERSION) -out $(BIN)/images

image-boot: ## Build the qemu-arm64 image and boot it in qemu-system-aarch64 to the agent's first line.
	@./build/install-deps.sh image
	$(GO) test -tags qemu -count=1 -v -timeout 15m -run TestBootQEMU ./build/image/

image-join: controlplane ## Boot the qemu-ARCH image (ARCH=arm64|riscv64); its agent joins a relay on the host and must be Ready in kubectl get nodes; a pod without hostNetwork gets a pod IP, reaches the host and answers on its hostPort.
	@./build/install-deps.sh image
	OUTPOST_VERSION=$(VERSION) OUTPOST_CONSOLE_DIR=$(CURDIR)/$(BIN)/qemu OUTPOST_QEMU_ARCH=$(ARCH) \
		$(GO) test -tags qemu -count=1 -v -timeout 25m -run TestJoinQEMU ./test/qemu/

image-upgrade: controlplane ## Boot the qemu-ARCH image with an upgrade key pinned; an AgentUpgrade to a second agent build ends Healthy with its version in kubectl get nodes, one to a build that exits at start RolledBack; a pod runs through both.
	@./build/install-deps.sh image
	OUTPOST_VERSION=$(VERSION) OUTPOST_CONSOLE_DIR=$(CURDIR)/$(BIN)/qemu OUTPOST_QEMU_ARCH=$(ARCH) \
		$(GO) test -tags qemu -count=1 -v -timeout 40m -run TestUpgradeQEMU ./test/qemu/

bench-mem: controlplane ## Agent PSS/RSS inside the qemu-ARCH guest (ARCH=arm64|riscv64), idle, then with 100 sim devices and 10 pods: bin/bench-mem*.json, docs/benchmarks.md; fails over build/budget-mem.json.
	@./build/install-deps.sh image
	OUTPOST_VERSION=$(VERSION) OUTPOST_CONSOLE_DIR=$(CURDIR)/$(BIN)/qemu OUTPOST_BENCH_IDLE=$(BENCH_IDLE) OUTPOST_BENCH_RUNS=$(BENCH_RUNS) \
		OUTPOST_QEMU_ARCH=$(ARCH) OUTPOST_BENCH_DOC=$(abspath $(BENCH_DOC)) OUTPOST_BENCH_FAULT_AROUND=$(FAULT_AROUND) \
		OUTPOST_BENCH_JSON=$(CURDIR)/$(BIN)/bench-mem$(if $(FAULT_AROUND),-$(ARCH)-faultaround,$(if $(filter-out arm64,$(ARCH)),-$(ARCH))).json \
		$(GO) test -tags qemu -count=1 -v -timeout 45m -run TestBenchMem ./test/qemu/

vet:
	$(GO) vet ./...
	$(GO) vet -tags outpost_heapprofile ./agent/metrics/

fmt:
	gofmt -w $$(git ls-files '*.go')

lint: vet ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fuzz: ## Run every fuzz target for FUZZTIME each.
	GO=$(GO) ./build/fuzz.sh $(FUZZTIME)

bench: bench-wire bench-relay bench-conns bench-agent bench-pods bench-streams bench-logging

bench-wire: ## Frame encode/decode speed and sizes.
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./wire/

bench-relay: controlplane ## Relay memory per connected agent, API-server requests per agent per minute, reconnect after a relay restart (1,000 protocol-level agents).
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench BenchmarkRelayMemory -benchtime 1x -count 3 -timeout 60m ./test/bench/

CONNS_DESIGNS ?= std nbio nbio-inline linkpoll

bench-conns: ## Relay-side cost of idle mutual-TLS WebSocket connections (OUTPOST_BENCH_CONNS, default 10,000) heartbeating every 10 s, the relay's former net/http + coder/websocket stack against event loops, the relay's linkpoll among them (CONNS_DESIGNS): heap + stacks, RSS and goroutines per connection, CPU per heartbeat; three rounds, each design in a fresh process.
	for round in 1 2 3; do for d in $(CONNS_DESIGNS); do \
		$(GO) test -run '^$$' -bench "^BenchmarkRelayConns$$/^$$d$$" -benchtime 1x -count 1 -timeout 20m ./test/bench/ || exit 1; \
	done; done

bench-agent: controlplane ## Agent RSS after 60 s connected and idle.
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench BenchmarkAgentIdleRSS -benchtime 1x -count 1 -timeout 20m ./test/bench/

bench-idle-pages: controlplane ## Which pages of the agent's binary are resident after 60 s connected and idle, by section and package, and how much it referenced while idle.
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench BenchmarkAgentIdlePages -benchtime 1x -count 1 -timeout 20m ./test/bench/

bench-agent-workload: controlplane ## bench-mem's idle and workload steps (100 sim devices, 10 pods) on amd64, with the Go runtime's memory classes beside the kernel's PSS.
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench BenchmarkAgentWorkloadMemory -benchtime 1x -count 1 -timeout 20m ./test/bench/

bench-heap: controlplane ## Where the agent's heap goes: bench-agent-workload with an agent built with the tag outpost_heapprofile, its live heap profiles idle and at the workload into bin/heap/, and the top allocation sites of each.
	@mkdir -p $(BIN)/heap
	CGO_ENABLED=0 $(GO) build -tags outpost_heapprofile -ldflags '-X main.version=v0.1.0-test' -o $(BIN)/heap/outpost-agent ./agent/cmd/outpost-agent
	CGO_ENABLED=0 $(GO) build -ldflags '-X main.version=v0.1.0-test' -o $(BIN)/heap/outpost-relay ./cloud/cmd/outpost-relay
	OUTPOST_BIN_DIR=$(abspath $(BIN)/heap) OUTPOST_BENCH_HEAPPROFILE=$(abspath $(BIN)/heap) CGO_ENABLED=1 \
		$(GO) test -run '^$$' -bench BenchmarkAgentWorkloadMemory -benchtime 1x -count 1 -timeout 20m ./test/bench/
	@for p in idle workload; do echo "== $$p: live heap by allocation site"; \
		$(GO) tool pprof -top -sample_index=inuse_space -nodecount 25 $(BIN)/heap/$$p.pprof 2>/dev/null; done

bench-pods: controlplane ## 30 pods on real containerd, pod network off and on (cni=off|on): apply→Running p50/p99, agent RSS/PSS, link bytes per pod create and status.
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench '^BenchmarkPods$$' -benchtime 1x -count 1 -timeout 40m ./test/bench/

bench-streams: controlplane ## exec and port-forward through the relay vs directly into the pod (medians, ratios), link bytes per exec and per idle stream, agent PSS with 8 streams, one /stats/summary scrape's cost.
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 20m ./test/streams/

bench-logging: ## Container logging, a logger process per container vs the agent copying the shims' FIFOs: agent PSS growth plus the loggers' PSS with 10 pods printing a line a second (real containerd).
	$(GO) test -run '^$$' -bench '^BenchmarkLogging10$$' -benchtime 1x -count 3 -timeout 20m ./agent/pods/

OUTPOST_OFFLINE ?= 10m

bench-autonomy: controlplane ## Edge autonomy: 30 pods back from the store after an offline reboot (pod network off and on); resync of 100 pods after OUTPOST_OFFLINE (10m) offline; agents back after a 30 s relay outage.
	CGO_ENABLED=1 OUTPOST_OFFLINE=$(OUTPOST_OFFLINE) $(GO) test -run '^$$' -bench 'BenchmarkRestartFromStore|BenchmarkResyncAfterOffline' -benchtime 1x -count 1 -timeout 60m ./test/bench/
	CGO_ENABLED=1 $(GO) test -run '^$$' -bench '^BenchmarkReconnectAfterOutage$$' -benchtime 3x -count 1 -timeout 20m ./test/bench/
	$(GO) test -run '^$$' -bench . ./agent/outbox/

deps: ## Refresh agent/deps.txt (every package the agent links and who imports it) after a deliberate change to the agent's dependencies.
	$(GO) test -count=1 -run TestAgentDependencyListIsCurrent ./agent/ -update

clean:
	rm -rf $(BIN)
