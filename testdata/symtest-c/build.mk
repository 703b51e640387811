# symtest-c: C functions for symbolizer tests; also a copy with the debug
# information stripped (symbol tables only), and a shared-library-free PIE.
WORKLOADS += $(BIN)/symtest-c $(BIN)/symtest-c-nodebug
$(BIN)/symtest-c: $(CURDIR)/symtest-c/main.c | $(BIN)
	$(CC) -O2 -g -fno-omit-frame-pointer -o $@ $<
$(BIN)/symtest-c-nodebug: $(BIN)/symtest-c
	objcopy --strip-debug $< $@
