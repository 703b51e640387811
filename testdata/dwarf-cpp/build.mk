# dwarf-cpp: C++ templates, namespaces and libstdc++ inlining for dwarfsym.
WORKLOADS += $(BIN)/dwarf-cpp
$(BIN)/dwarf-cpp: $(CURDIR)/dwarf-cpp/main.cc | $(BIN)
	$(CXX) -O2 -g -fno-omit-frame-pointer -o $@ $<
