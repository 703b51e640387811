WORKLOADS += $(BIN)/nofp-cgo
$(BIN)/nofp-cgo: $(CURDIR)/nofp-cgo/main.go | $(BIN)
	cd $(CURDIR)/nofp-cgo && CGO_ENABLED=1 $(GO) build -o $@ main.go
