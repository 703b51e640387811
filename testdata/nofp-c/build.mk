WORKLOADS += $(BIN)/nofp-c
$(BIN)/nofp-c: $(CURDIR)/nofp-c/main.c | $(BIN)
	$(CC) -O2 -g -fomit-frame-pointer -o $@ $<
