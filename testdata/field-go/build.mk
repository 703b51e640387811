# field-go: the 75/25 workload of the field tests (test/reliability), in
# Go, stripped (-ldflags='-s -w'), as Go binaries ship.
WORKLOADS += $(BIN)/field-go
$(BIN)/field-go: $(CURDIR)/field-go/main.go | $(BIN)
	cd $(CURDIR)/field-go && $(GO) build -trimpath -ldflags='-s -w' -o $@ main.go
