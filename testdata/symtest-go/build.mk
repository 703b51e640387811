# symtest-go: a Go workload with inlining, built unstripped and stripped
# (-ldflags=-s -w) so the symbolizer can be checked against the twin.
WORKLOADS += $(BIN)/symtest-go $(BIN)/symtest-go-stripped
$(BIN)/symtest-go: $(CURDIR)/symtest-go/main.go | $(BIN)
	cd $(CURDIR)/symtest-go && $(GO) build -o $@ main.go
$(BIN)/symtest-go-stripped: $(CURDIR)/symtest-go/main.go | $(BIN)
	cd $(CURDIR)/symtest-go && $(GO) build -ldflags='-s -w' -o $@ main.go
