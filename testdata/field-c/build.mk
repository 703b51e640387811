# field-c: the 75/25 workload of the field tests (test/reliability), in C.
# field-c is built with gcc's defaults (-O2, which omits frame pointers);
# field-c-fp with frame pointers in every function but the leaf
# (-momit-leaf-frame-pointer keeps hot_inner frameless, as in the field).
WORKLOADS += $(BIN)/field-c $(BIN)/field-c-fp
$(BIN)/field-c: $(CURDIR)/field-c/main.c | $(BIN)
	$(CC) -O2 -o $@ $<
$(BIN)/field-c-fp: $(CURDIR)/field-c/main.c | $(BIN)
	$(CC) -O2 -fno-omit-frame-pointer -momit-leaf-frame-pointer -o $@ $<
