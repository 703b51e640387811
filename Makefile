# Scorch: build, test and run. `make help` lists the targets.
# Go, found without relying on the caller's PATH: sudo's secure_path drops
# /usr/local/go/bin. Its directory goes first on PATH for everything make
# runs (tests call `go build` and `go tool pprof` themselves).
GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
BIN      := bin/scorch
# The commit, "-dirty" with uncommitted changes. Not `git describe --dirty`,
# which rewrites .git/index (left root-owned under sudo); status with
# GIT_OPTIONAL_LOCKS=0 only reads it.
VERSION  ?= $(shell v=$$(git describe --tags --always 2>/dev/null) || v=dev; \
  [ -z "$$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null)" ] || v=$$v-dirty; echo $$v)
LDFLAGS  := -X main.version=$(VERSION)
# Static: without cgo the agent can drop its capabilities on every thread
# (--drop-privileges), and the binary runs on any distribution.
CGO_ENABLED ?= 0
PREFIX   ?= /usr/local
# Flags for `make run`; override e.g. make run RUN_FLAGS="--frequency 49".
RUN_FLAGS ?=
FUZZTIME ?= 10s

.PHONY: help build generate check-generate testdata prereqs test test-unit test-root test-long test-field lint test-kernels fuzz vet run bench bench-startup install clean

help:
	@echo "make build           build $(BIN) (needs no clang: BPF objects are committed)"
	@echo "make run             build, then run the agent on this host with the viewer on localhost (sudo make run)"
	@echo "make test            prerequisites, vet, lint, then every test (as root: tests load real BPF programs)"
	@echo "make test-unit       the tests that need no root (under a minute; skips the rest)"
	@echo "make test-root       every package but test/reliability, as root"
	@echo "make test-long       test/reliability: the agent binary under churn, faults, restarts, a soak"
	@echo "make test-field      the field tests of issue 14 alone (make test runs them too)"
	@echo "make lint            staticcheck (dead code included) and the import rules of ARCHITECTURE.md"
	@echo "make prereqs         check every test prerequisite, naming the Debian package of each missing one"
	@echo "make test-kernels    boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and profile a workload on each (about 5 minutes)"
	@echo "make generate        regenerate the BPF objects with clang (bpf2go)"
	@echo "make check-generate  regenerate and fail if the committed objects differ"
	@echo "make fuzz            run every fuzz target for FUZZTIME each ($(FUZZTIME))"
	@echo "make bench           run the benchmarks and rewrite bench/RESULTS.md"
	@echo "make bench-startup   only the start-up benchmarks (fresh-process cost, time to the first complete stack)"
	@echo "make install         install the binary and the systemd unit"

# Under sudo, what make creates in the checkout goes back to the user who
# ran sudo (SUDO_UID/SUDO_GID), so that no root-owned file is left behind.
# Root's own Go caches are used (not the user's, which root would own).
ifneq ($(SUDO_UID),)
ifeq ($(shell id -u),0)
export GOCACHE ?= /root/.cache/go-build
export GOPATH ?= /root/go
endif
endif
CHOWN_BACK = $(if $(SUDO_UID),[ "$$(id -u)" != 0 ] || chown -R $(SUDO_UID):$(or $(SUDO_GID),$(SUDO_UID)) $(1),true)

build:
	CGO_ENABLED=$(CGO_ENABLED) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/scorch; \
	  rc=$$?; $(call CHOWN_BACK,$(BIN) $(if $(filter bin/%,$(BIN)),bin)); exit $$rc

generate:
	$(GO) generate ./bpf

check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: regenerated BPF objects differ from the committed ones: run 'make generate' and commit"; exit 1; }

testdata:
	@$(MAKE) -C testdata GO=$(GO); rc=$$?; $(call CHOWN_BACK,testdata/bin); exit $$rc

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt would change the files above"; exit 1; }

# Test prerequisites: every line of .ci/prereqs.txt (tool -> Debian
# package), Go and root, each missing one named with its package.
prereqs:
	@GO=$(GO) .ci/prereqs

# The test tiers. SCORCH_TEST_STRICT=1: a test that needs root fails,
# rather than skips, when not run as root (internal/testenv).
#   test-unit: go test -short, which skips the tests that need root
#     (testenv.RequireRoot) even as root; test/reliability (all of it
#     needs root) and bench/ (benchmarks) are left out.
#   test-root: every other package, as root. -p 1: packages one at a
#     time, since the tests that load BPF programs measure CPU splits of
#     real workloads, and side by side they starve each other.
#   test-long: test/reliability, the built agent under churn, faults,
#     restarts and a 10-minute soak.
UNIT_PKGS = $$($(GO) list ./... | grep -v -e /test/reliability -e /bench/)
ROOT_PKGS = $$($(GO) list ./... | grep -v /test/reliability)
LONG_PKGS = ./test/reliability/

test-unit:
	@GO=$(GO) .ci/prereqs --no-root
	$(GO) test -short -count=1 $(UNIT_PKGS)

test-root: prereqs build testdata
	SCORCH_TEST_STRICT=1 $(GO) test -p 1 -count=1 -timeout 45m $(ROOT_PKGS)

test-long: prereqs testdata
	SCORCH_TEST_STRICT=1 $(GO) test -p 1 -count=1 -timeout 30m $(LONG_PKGS)

# The field tests of issue 14 alone (test-long runs them too, with the
# rest of test/reliability).
test-field: prereqs testdata
	SCORCH_TEST_STRICT=1 $(GO) test -p 1 -count=1 -timeout 10m -run 'TestField' $(LONG_PKGS)

# staticcheck (U1000 finds dead code) and the import table of
# ARCHITECTURE.md, which internal/archlint enforces.
lint:
	$(GO) tool staticcheck ./...
	$(GO) test -count=1 ./internal/archlint/

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

# Everything: the prerequisites are checked first, so a missing tool is
# named before anything runs.
test: prereqs vet lint test-root test-long fuzz test-kernels

# Both BPF programs on other kernels than the host's: Debian's packaged 5.10, 6.1
# and 6.12 booted under QEMU (test/kernels/run.sh says what it needs).
test-kernels:
	GO=$(GO) test/kernels/run.sh

# The agent over the whole host, with the local store in ./scorch-data and
# the viewer on localhost. Ctrl-C stops it (the last window is kept).
RUN_DATA ?= $(CURDIR)/scorch-data
RUN_LISTEN ?= 127.0.0.1:7070
# Under sudo the shell ignores the Ctrl-C that stops the agent, so that it
# still gives RUN_DATA back to the user afterwards.
run: build
	@echo "scorch: profiling this host; viewer http://$(RUN_LISTEN)/  metrics http://$(RUN_LISTEN)/metrics  windows in $(RUN_DATA)  (Ctrl-C to stop)"
	@trap '' INT TERM; ./$(BIN) agent --data-dir $(RUN_DATA) --listen $(RUN_LISTEN) $(RUN_FLAGS); rc=$$?; \
	  $(call CHOWN_BACK,$(filter $(CURDIR)/%,$(abspath $(RUN_DATA)))); exit $$rc

bench: build testdata
	GO=$(GO) bench/run.sh

bench-startup: build testdata
	GO=$(GO) BENCH_ONLY="fresh firststack" bench/run.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/scorch
	@if [ -f deploy/systemd/scorch.service ]; then \
	  install -D -m 0644 deploy/systemd/scorch.service $(DESTDIR)/etc/systemd/system/scorch.service; \
	  echo "installed; start with: systemctl daemon-reload && systemctl enable --now scorch"; fi

clean:
	rm -rf bin
	$(MAKE) -C testdata clean
