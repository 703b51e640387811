# field-rust: the 75/25 workload of the field tests (test/reliability), a
# Rust release build (no frame pointers), no external crates.
WORKLOADS += $(BIN)/field-rust
$(BIN)/field-rust: $(CURDIR)/field-rust/src/main.rs $(CURDIR)/field-rust/Cargo.toml | $(BIN)
	cargo build --release --offline --quiet --manifest-path $(CURDIR)/field-rust/Cargo.toml --target-dir $(BIN)/field-rust-target
	cp $(BIN)/field-rust-target/release/field-rust $@
