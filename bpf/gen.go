// Package bpf holds Scorch's BPF C sources and the Go bindings bpf2go
// generates from them (scorch_*_bpfel.go and .o, committed so that `go build`
// needs no clang). Only internal/sampler loads them.
//
// Two objects come from the one source: Scorch, the full program, and
// ScorchFp (built with -DSCORCH_FP_ONLY), which walks user stacks through
// frame pointers only and so loads on kernels without bpf_loop (before 5.17).
// Both declare the same maps and programs: internal/sampler loads either
// into ScorchObjects. The types are generated from Scorch only.
//
// Regenerate with `make generate` (or `go generate ./bpf`); CI does so and
// fails when the result differs from what is committed.
package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type sample_key -type event -type scorch_config -type stat_key -type event_type -type unwind_stack -type unwind_request -type unwind_file -type unwind_file_key -type unwind_file_state -type unwind_proc -type unwind_proc_mapping -type unwind_caller -type unwind_mapping -type unwind_mapping_kind -type unwind_stop -type filter_flag -type raw_stack -type deferred_sample Scorch src/scorch.bpf.c -- -I/usr/include/x86_64-linux-gnu -I./src/include -I../unwinder/bpf -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target amd64,arm64 ScorchFp src/scorch.bpf.c -- -DSCORCH_FP_ONLY -I/usr/include/x86_64-linux-gnu -I./src/include -I../unwinder/bpf -O2 -g -Wall -Werror
