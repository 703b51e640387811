# Scorch: build, test and run. `make help` lists the targets.
GO       ?= go
BIN      := bin/scorch
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PREFIX   ?= /usr/local
# Flags for `make run`; override e.g. make run RUN_FLAGS="--frequency 49".
RUN_FLAGS ?=
FUZZTIME ?= 10s

.PHONY: help build generate check-generate testdata test test-go test-kernels fuzz vet run bench install clean

help:
	@echo "make build           build $(BIN) (needs no clang: BPF objects are committed)"
	@echo "make run             build, then run the agent on this host with the viewer on localhost (sudo make run)"
	@echo "make test            the whole test suite (as root: tests load real BPF programs)"
	@echo "make test-kernels    boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and profile a workload on each (about 5 minutes)"
	@echo "make generate        regenerate the BPF objects with clang (bpf2go)"
	@echo "make check-generate  regenerate and fail if the committed objects differ"
	@echo "make fuzz            run every fuzz target for FUZZTIME each ($(FUZZTIME))"
	@echo "make bench           run the benchmarks and rewrite bench/RESULTS.md"
	@echo "make install         install the binary and the systemd unit"

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/scorch

generate:
	$(GO) generate ./bpf

check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: regenerated BPF objects differ from the committed ones: run 'make generate' and commit"; exit 1; }

testdata:
	$(MAKE) -C testdata

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt would change the files above"; exit 1; }

# -p 1: packages one at a time. The tests that load BPF programs measure
# CPU splits of real workloads; run side by side they starve each other.
test-go: build testdata
	$(GO) test -p 1 -count=1 -timeout 45m ./...

# Every fuzz target, briefly: seeds always run in `go test`; this explores.
# A run that fails without writing a failing input (the fuzzing engine's
# own "context deadline exceeded" at the time limit on a loaded machine,
# golang/go#75804) is tried once more; a crasher always fails.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; \
	    if ! $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/scorch-fuzz.log 2>&1; then \
	      cat /tmp/scorch-fuzz.log; \
	      if grep -q 'Failing input written' /tmp/scorch-fuzz.log; then exit 1; fi; \
	      echo "fuzz $$pkg $$t: failed without a failing input; once more"; \
	      $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	    else tail -n 2 /tmp/scorch-fuzz.log; fi; \
	  done; \
	done

test: vet test-go fuzz

# Both BPF programs on other kernels than the host's: Debian's packaged 5.10, 6.1
# and 6.12 booted under QEMU (test/kernels/run.sh says what it needs).
test-kernels:
	GO=$(GO) test/kernels/run.sh

# The agent over the whole host, with the local store in ./scorch-data and
# the viewer on localhost. Ctrl-C stops it (the last window is kept).
RUN_DATA ?= $(CURDIR)/scorch-data
RUN_LISTEN ?= 127.0.0.1:7070
run: build
	@echo "scorch: profiling this host; viewer http://$(RUN_LISTEN)/  metrics http://$(RUN_LISTEN)/metrics  windows in $(RUN_DATA)  (Ctrl-C to stop)"
	./$(BIN) agent --data-dir $(RUN_DATA) --listen $(RUN_LISTEN) $(RUN_FLAGS)

bench: build testdata
	bench/run.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/scorch
	@if [ -f deploy/systemd/scorch.service ]; then \
	  install -D -m 0644 deploy/systemd/scorch.service $(DESTDIR)/etc/systemd/system/scorch.service; \
	  echo "installed; start with: systemctl daemon-reload && systemctl enable --now scorch"; fi

clean:
	rm -rf bin
	$(MAKE) -C testdata clean
