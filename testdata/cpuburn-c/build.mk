WORKLOADS += $(BIN)/cpuburn-c
$(BIN)/cpuburn-c: $(CURDIR)/cpuburn-c/main.c | $(BIN)
	$(CC) -O1 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -fno-inline -o $@ $<
