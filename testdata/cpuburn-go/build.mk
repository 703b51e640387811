WORKLOADS += $(BIN)/cpuburn-go
$(BIN)/cpuburn-go: $(CURDIR)/cpuburn-go/main.go | $(BIN)
	cd $(CURDIR)/cpuburn-go && GOFLAGS=-mod=mod $(GO) build -trimpath -ldflags='-s -w' -o $@ main.go
