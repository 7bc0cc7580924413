# dialkv: the two commands a newcomer needs are `make run` and `make test`.
SHELL     := bash
GO        ?= go
BIN       := bin
PORT_BASE ?= 7000
NODES     ?= 3
DATA_DIR  ?= ./data
# Packages whose tests run without the race detector: they spawn real kvd
# processes (built without -race) and mostly wait on them. deploy/ also runs
# Prometheus (Debian's package; .ci/run installs it) against them.
PROCESS_PKGS := ./jepsen-style-tests/... ./deploy/...

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2

# kvd --version and kvctl --version print this (git describe of the tree).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/dialkv/dialkv/internal/version.Version=$(VERSION)

.PHONY: all build run run-tls test test-unit test-process vet lint verify-fmt fix-fmt proto clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kvd ./cmd/kvd
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kvctl ./cmd/kvctl

# A local cluster in the foreground; Ctrl-C stops it. Data survives in $(DATA_DIR).
run: build
	$(BIN)/kvd cluster --nodes $(NODES) --data-dir $(DATA_DIR) --port-base $(PORT_BASE)

# The same with TLS on every link; certificates in $(DATA_DIR)/certs.
run-tls: build
	$(BIN)/kvd cluster --tls --nodes $(NODES) --data-dir $(DATA_DIR) --port-base $(PORT_BASE)

# Everything that fits in CI: formatting, vet and staticcheck (lint), unit
# and in-process cluster tests with the race detector, then the
# real-process tests.
test: lint test-unit test-process bench-smoke fuzz-smoke

test-unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v -e jepsen-style-tests -e /deploy$$)

test-process:
	@log=$$(mktemp -t dialkv-test-process.XXXXXX); \
	$(GO) test -count=1 -timeout 10m -v $(PROCESS_PKGS) 2>&1 | tee $$log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go)'; \
	rc=$${PIPESTATUS[0]}; \
	if [ $$rc -ne 0 ]; then echo "---- full output of the failing tests ----"; awk -f .ci/failed-tests.awk $$log; fi; \
	rm -f $$log; exit $$rc

vet:
	$(GO) vet ./...

# Fuzz the API's request decoding (api/fuzz_test.go): HTTP requests, gRPC
# request bytes, session tokens, read options, bearer tokens. Go fuzzes one
# target per `go test -fuzz`, so each Fuzz* target runs in turn, FUZZTIME
# each; a failing input lands in api/testdata/fuzz/ and is re-run by every
# `go test` from then on. fuzz-smoke (part of test) gives each 3,000 inputs.
FUZZTIME ?= 1m
FUZZ_PKG := ./api
fuzz_run  = set -e; targets=$$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' $(FUZZ_PKG)/*_test.go); \
	test -n "$$targets"; \
	for t in $$targets; do echo "--- fuzz $$t ($(1))"; \
	$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(1) $(FUZZ_PKG); done

.PHONY: fuzz fuzz-smoke

fuzz:
	@$(call fuzz_run,$(FUZZTIME))

# A count, not a time: with -fuzztime as a duration, Go's fuzzing can end
# a busy run with "context deadline exceeded" when the time is up while a
# worker still runs an input (seen in CI under load), failing a run that
# found nothing.
fuzz-smoke:
	@$(call fuzz_run,3000x)

# gofmt, go vet and staticcheck (pinned; fetched through the module proxy).
lint: verify-fmt vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

verify-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

fix-fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

# Regenerate api/kvpb from api/proto. Needs protoc (Debian: protobuf-compiler);
# the generated code is committed, so building never needs this.
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I api/proto \
		--go_out=. --go_opt=module=github.com/dialkv/dialkv \
		--go-grpc_out=. --go-grpc_opt=module=github.com/dialkv/dialkv \
		api/proto/kv/v1/kv.proto

clean:
	rm -rf $(BIN)

# --- Benchmarks (bench/ is a Go module of its own, so etcd stays out of ours) ---
# DURATION, CLIENTS and VALUE_SIZE are taken only from the command line or
# the environment (other targets share the names with other defaults).
bench_var      = $(if $(filter command line environment,$(origin $(1))),$($(1)),$(2))
BENCH_DURATION = $(call bench_var,DURATION,10s)
BENCH_CLIENTS  = $(call bench_var,CLIENTS,64)
BENCH_VALUE    = $(call bench_var,VALUE_SIZE,256)
BENCH_KEYS    ?= 10000
MEMORY_KEYS   ?= 1000000

.PHONY: bench-build bench-compare bench-smoke bench-memory

bench-build:
	cd bench && $(GO) build -o ../$(BIN)/kvbench ./cmd/kvbench
	cd bench && $(GO) build -o ../$(BIN)/etcdnode ./cmd/etcdnode
	cd bench && $(GO) build -o ../$(BIN)/benchcompare ./cmd/benchcompare

# dialkv against etcd, 3 members each on 127.0.0.1, fsync on for both. The
# -r16 workloads (put-c64-r16, get-linearizable-c64-r16) run last, on
# dialkv's key space split into 16 ranges with leaders balanced over the 3
# nodes; SCALE lines compare them with dialkv's own single-range runs. On
# those ranges txn-c64-x2 and txn-c64-x4 (transactions across 2 and 4
# ranges) run on dialkv alone and print WORKLOAD lines.
bench-compare: build bench-build
	$(BIN)/benchcompare -duration $(BENCH_DURATION) -clients $(BENCH_CLIENTS) -value-size $(BENCH_VALUE) -keys $(BENCH_KEYS)

# Peak RSS of every server after loading MEMORY_KEYS keys (slow: minutes).
bench-memory: build bench-build
	$(BIN)/benchcompare -memory -memory-keys $(MEMORY_KEYS) -clients $(BENCH_CLIENTS) -value-size $(BENCH_VALUE)

# Idle CPU, memory and write throughput of 3 nodes hosting each of RANGES
# range counts (a fresh cluster per count; 1000 ranges take minutes).
RANGES ?= 10,100,1000

.PHONY: bench-ranges bench-rebalance bench-micro

bench-ranges: build bench-build
	cd bench && $(GO) build -o ../$(BIN)/rangebench ./cmd/rangebench
	$(BIN)/rangebench -ranges $(RANGES) -duration $(call bench_var,DURATION,5s) -clients $(BENCH_CLIENTS) -value-size $(BENCH_VALUE) $(if $(JSON),-json $(JSON))

# A 4th node joins 3 nodes holding SIZE (default 1GiB) in ranges of at most
# RANGE_MAX_BYTES (default 64MiB, kvd's): time until it holds its share of
# replicas and until leaders are balanced, replicas and leaders per node,
# and a light put probe's p99 before vs during. Its last line starts with
# REBALANCE. Minutes at 1GiB; SIZE=64MiB RANGE_MAX_BYTES=4MiB for a quick run.
bench-rebalance: build
	cd bench && $(GO) build -o ../$(BIN)/rebalancebench ./cmd/rebalancebench
	$(BIN)/rebalancebench -size $(call bench_var,SIZE,1GiB) -range-max-bytes $(call bench_var,RANGE_MAX_BYTES,64MiB) $(if $(KVD_ARGS),-kvd-args "$(KVD_ARGS)") $(if $(JSON),-json $(JSON))

# Watchers and leases (issue 16): CLIENTS writers' puts/s with no watcher,
# then with each count of WATCHERS (default 1,100) watching their prefix
# (events/s, lag, every event checked), then lease grants/s and
# keepalives/s, each phase DURATION (default 8s; leases half), for each of
# SYSTEMS (default dialkv,etcd) in turn; RATIO lines compare the two.
# About two minutes (one with SYSTEMS=dialkv).
BENCH_WATCHERS := 1,100
BENCH_WATCH_SYSTEMS := dialkv,etcd
.PHONY: bench-watch
bench-watch: build bench-build
	cd bench && $(GO) build -o ../$(BIN)/watchbench ./cmd/watchbench
	$(BIN)/watchbench -systems $(call bench_var,SYSTEMS,$(BENCH_WATCH_SYSTEMS)) -duration $(call bench_var,DURATION,8s) -watchers $(call bench_var,WATCHERS,$(BENCH_WATCHERS)) -clients $(BENCH_CLIENTS) -value-size $(BENCH_VALUE) -keys $(BENCH_KEYS)

# Under a minute: kvbench against a real 3-node kvd, the -r16 set-up (split
# and leader balance), a tiny bench-rebalance and a short watchbench; no
# etcd, no timing thresholds.
bench-smoke:
	cd bench && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...
	$(GO) test -run XXX -bench . -benchtime 1x ./raftstore ./shard

# Go benchmarks of the hot paths: FSM batch apply and commit, log append
# and read, read-index, command encoding.
bench-micro:
	$(GO) test -run XXX -bench . -benchmem ./raftstore ./shard

# --- Jepsen-style suite (jepsen-style-tests/ is the library, cmd/jepsen the CLI) ---
# make jepsen [DURATION=10m] [NODES=5] [NEMESIS=all] [SEED=n] [OUT=dir]
# Exits 0 only when every checker passes; its last line is the verdict and
# the results folder (default: a new folder under $TMPDIR/dialkv-jepsen).
# make jepsen-canary takes the same variables (defaults: 5 nodes, 2m,
# NEMESIS=partition) and exits 0 only if the planted stale-as-linearizable
# reads were caught. The variables count only from the command line or the
# environment: other targets use the same names with other defaults.
# KNOWN_ISSUES (comma list, default none) tolerates known server bugs by
# their exact signature: see `bin/jepsen -h`.
# RANGES=n pre-splits the key space the workload touches into n user ranges
# before it starts; RANGE_MAX_BYTES=b is every node's --range-max-bytes
# (ranges also split as they grow). Both unset: one user range, kvd's
# default size. The verdict line says how many ranges the run ended with.
# WATCH_RETENTION_BYTES=b is every node's --watch-retention-bytes: small
# (say 64KiB), ranges trim their change feeds during the run and the
# watchers' resumes meet COMPACTED.
# WORKLOADS (comma list, default register,watch,lease,bank,append; make
# jepsen only): register is registers, lists, sets and reads at every
# level; watch adds writers and watchers under w/ and the watch checker;
# lease adds leases with keys under lease/, a watcher on them and the
# lease checker; bank adds transfers between accounts under bank/ over 4
# ranges and read-all transactions (the bank checker); append adds
# transactions appending to and reading lists under list/ (the append
# checker). With bank or append, NEMESIS=all includes kill-coordinator.
# TLS=1 runs with mutual TLS on every link and auth on (clients as user
# jepsen, nemeses as root), adds the auth-revoke nemesis to NEMESIS=all
# and the auth checker (see docs/jepsen.md).
comma             := ,
jepsen_var        = $(if $(filter command line environment,$(origin $(1))),$($(1)),$(2))
JEPSEN_COMMON     = --kvd $(BIN)/kvd --nodes $(call jepsen_var,NODES,5) $(if $(SEED),--seed $(SEED)) $(if $(OUT),--out $(OUT)) \
                    $(if $(KNOWN_ISSUES),--known-issues $(KNOWN_ISSUES)) \
                    $(if $(call jepsen_var,RANGES,),--ranges $(RANGES)) \
                    $(if $(call jepsen_var,RANGE_MAX_BYTES,),--range-max-bytes $(RANGE_MAX_BYTES)) \
                    $(if $(call jepsen_var,WATCH_RETENTION_BYTES,),--watch-retention-bytes $(WATCH_RETENTION_BYTES)) \
                    $(if $(filter 1 true yes,$(call jepsen_var,TLS,)),--tls)

.PHONY: jepsen jepsen-canary jepsen-build

jepsen-build: build
	$(GO) build -o $(BIN)/jepsen ./cmd/jepsen

jepsen: jepsen-build
	@$(BIN)/jepsen $(JEPSEN_COMMON) --duration $(call jepsen_var,DURATION,10m) --nemesis $(call jepsen_var,NEMESIS,all) \
		--workloads $(call jepsen_var,WORKLOADS,register$(comma)watch$(comma)lease$(comma)bank$(comma)append)

jepsen-canary: jepsen-build
	@$(BIN)/jepsen --canary $(JEPSEN_COMMON) --duration $(call jepsen_var,DURATION,2m) --nemesis $(call jepsen_var,NEMESIS,partition)

# make crash-loop [CYCLES=100] [SEED=n] [OUT=dir]: 3 nodes, 24 ranges under
# writes, kill -9 of a random node every few seconds (a majority every 4th
# cycle, a range's leader mid-split every 5th), restart; then every
# acknowledged write must be in the final state and every range's replicas
# must agree by digest. Exits 0 only on PASS; the last line is the summary
# and names the results folder (default: a new folder under
# $TMPDIR/dialkv-crashloop). `bin/crashloop -h` lists the other knobs. The
# short form is TestCrashLoop_ShortRunLosesNoAcknowledgedWrite (make test).
CYCLES ?= 100

.PHONY: crash-loop

crash-loop: build
	$(GO) build -o $(BIN)/crashloop ./cmd/crashloop
	@$(BIN)/crashloop --kvd $(BIN)/kvd --cycles $(CYCLES) $(if $(SEED),--seed $(SEED)) $(if $(OUT),--out $(OUT))
