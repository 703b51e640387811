# dwarf-c: one C program (deep static inline chains) built in every DWARF
# flavour the dwarfsym tests must read. The unstripped builds are also the
# reference binaries addr2line is run on.
DWARF_C_SRC := $(CURDIR)/dwarf-c/main.c
DWARF_C_CFLAGS := -O2 -g -fno-omit-frame-pointer

WORKLOADS += $(BIN)/dwarf-c $(BIN)/dwarf-c-v4 $(BIN)/dwarf-c-zlib \
	$(BIN)/dwarf-c-debuglink $(BIN)/dwarf-c-buildid $(BIN)/dwarf-c-mini

# DWARF 5 (gcc 12's default, spelled out).
$(BIN)/dwarf-c: $(DWARF_C_SRC) | $(BIN)
	$(CC) $(DWARF_C_CFLAGS) -gdwarf-5 -Wl,--build-id -o $@ $<

$(BIN)/dwarf-c-v4: $(DWARF_C_SRC) | $(BIN)
	$(CC) $(DWARF_C_CFLAGS) -gdwarf-4 -o $@ $<

# SHF_COMPRESSED zlib debug sections (this toolchain has no zstd; the test
# rewrites this binary's sections with zstd when the zstd tool is present).
$(BIN)/dwarf-c-zlib: $(DWARF_C_SRC) | $(BIN)
	$(CC) $(DWARF_C_CFLAGS) -gz=zlib -o $@ $<

# Only debug info: a separate file named by .gnu_debuglink next to it.
$(BIN)/dwarf-c-debuglink: $(BIN)/dwarf-c
	objcopy --only-keep-debug $< $@.debug
	objcopy --strip-all --add-gnu-debuglink=$@.debug $< $@

# Only debug info: a separate file found by build id. The test lays
# dwarf-c-buildid.debug out as <tmp>/.build-id/xx/yyyy.debug.
$(BIN)/dwarf-c-buildid: $(DWARF_C_SRC) | $(BIN)
	$(CC) $(DWARF_C_CFLAGS) -DBUILDID_VARIANT -Wl,--build-id -o $@.full $<
	objcopy --only-keep-debug $@.full $@.debug
	objcopy --strip-all $@.full $@

# MiniDebugInfo (.gnu_debugdata): an xz-compressed ELF holding the .symtab
# entries that .dynsym lacks, as Fedora ships them.
$(BIN)/dwarf-c-mini: $(BIN)/dwarf-c
	nm -D $< --format=posix --defined-only | awk '{ print $$1 }' | sort > $@.dynsyms
	nm $< --format=posix --defined-only | awk '{ if ($$2 == "T" || $$2 == "t") print $$1 }' | sort > $@.funcsyms
	comm -13 $@.dynsyms $@.funcsyms > $@.keep
	objcopy --only-keep-debug $< $@.mini
	objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=$@.keep $@.mini $@.mini2
	xz -f $@.mini2
	objcopy --strip-all --remove-section .comment --add-section .gnu_debugdata=$@.mini2.xz $< $@
	rm -f $@.dynsyms $@.funcsyms $@.keep $@.mini $@.mini2.xz
