WORKLOADS += $(BIN)/nofp-cpp
$(BIN)/nofp-cpp: $(CURDIR)/nofp-cpp/main.cc | $(BIN)
	$(CXX) -O2 -g -fomit-frame-pointer -o $@ $<
