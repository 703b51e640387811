WORKLOADS += $(BIN)/symtest-cpp
$(BIN)/symtest-cpp: $(CURDIR)/symtest-cpp/main.cc | $(BIN)
	$(CXX) -O2 -g -fno-omit-frame-pointer -o $@ $<
