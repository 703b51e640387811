// Package bpf holds Scorch's BPF C sources and the Go bindings bpf2go
// generates from them (scorch_*_bpfel.go and .o, committed so that `go build`
// needs no clang). Only internal/sampler loads them.
//
// Regenerate with `make generate` (or `go generate ./bpf`); CI does so and
// fails when the result differs from what is committed.
package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type sample_key -type event -type scorch_config -type stat_key -type event_type -type unwind_stack -type unwind_proc -type unwind_mapping -type unwind_stop -type filter_flag -type raw_stack Scorch src/scorch.bpf.c -- -I/usr/include/x86_64-linux-gnu -I./src/include -I../unwinder/bpf -O2 -g -Wall -Werror
