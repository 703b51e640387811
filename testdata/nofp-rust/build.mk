WORKLOADS += $(BIN)/nofp-rust
$(BIN)/nofp-rust: $(CURDIR)/nofp-rust/src/main.rs $(CURDIR)/nofp-rust/Cargo.toml | $(BIN)
	cd $(CURDIR)/nofp-rust && RUSTFLAGS="-C force-frame-pointers=no" cargo build --release --offline --target-dir $(BIN)/nofp-rust-target
	cp $(BIN)/nofp-rust-target/release/nofp-rust $@
