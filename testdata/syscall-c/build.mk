WORKLOADS += $(BIN)/syscall-c
$(BIN)/syscall-c: $(CURDIR)/syscall-c/main.c | $(BIN)
	$(CC) -O1 -g -fno-omit-frame-pointer -o $@ $<
