# dialkv: the two commands a newcomer needs are `make run` and `make test`.
SHELL     := bash
GO        ?= go
BIN       := bin
PORT_BASE ?= 7000
NODES     ?= 3
DATA_DIR  ?= ./data
# Packages whose tests run without the race detector: they spawn real kvd
# processes (built without -race) and mostly wait on them.
PROCESS_PKGS := ./jepsen-style-tests/...

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build run test test-unit test-process vet verify-fmt fix-fmt proto clean

all: build

build:
	$(GO) build -o $(BIN)/kvd ./cmd/kvd
	$(GO) build -o $(BIN)/kvctl ./cmd/kvctl

# A local cluster in the foreground; Ctrl-C stops it. Data survives in $(DATA_DIR).
run: build
	$(BIN)/kvd cluster --nodes $(NODES) --data-dir $(DATA_DIR) --port-base $(PORT_BASE)

# Everything that fits in CI: formatting, vet, unit and in-process cluster
# tests with the race detector, then the real-process tests.
test: verify-fmt vet test-unit test-process

test-unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v jepsen-style-tests)

test-process:
	$(GO) test -count=1 -timeout 10m -v $(PROCESS_PKGS) 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go)' ; exit $${PIPESTATUS[0]}

vet:
	$(GO) vet ./...

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
