# field-cpp: the 75/25 workload of the field tests (test/reliability), in
# C++ with -O2 (no frame pointers).
WORKLOADS += $(BIN)/field-cpp
$(BIN)/field-cpp: $(CURDIR)/field-cpp/main.cc | $(BIN)
	$(CXX) -O2 -o $@ $<
