# dwarf-rust: Rust release build with full debuginfo (profile.release
# debug = true), no external crates.
WORKLOADS += $(BIN)/dwarf-rust
$(BIN)/dwarf-rust: $(CURDIR)/dwarf-rust/src/main.rs $(CURDIR)/dwarf-rust/Cargo.toml | $(BIN)
	cargo build --release --offline --quiet --manifest-path $(CURDIR)/dwarf-rust/Cargo.toml --target-dir $(BIN)/dwarf-rust-target
	cp $(BIN)/dwarf-rust-target/release/dwarf-rust $@
