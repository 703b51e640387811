package exporter

import "github.com/scorch-profiler/scorch/symbolizer"

// Frames is a Resolver that remembers what it named, for builders of the
// same samples: the agent builds each window's samples twice, once into
// their target's profile and once into the merge of all targets, and with
// one Frames between them each address is named once. It keeps every
// address it was asked about, as a Builder keeps a location for each, so
// it lives as long as the builders it serves (one window). It is not safe
// for concurrent use.
type Frames struct {
	res    Resolver
	user   map[userAddr]symbolizer.Frame
	kernel map[uint64]symbolizer.Frame
}

type userAddr struct {
	pid  uint32
	addr uint64
}

// NewFrames returns a Frames that asks res.
func NewFrames(res Resolver) *Frames {
	return &Frames{res: res, user: map[userAddr]symbolizer.Frame{}, kernel: map[uint64]symbolizer.Frame{}}
}

// ResolveUser returns what res named addr of process pid the first time.
func (f *Frames) ResolveUser(pid uint32, addr uint64) symbolizer.Frame {
	k := userAddr{pid, addr}
	if fr, ok := f.user[k]; ok {
		return fr
	}
	fr := f.res.ResolveUser(pid, addr)
	f.user[k] = fr
	return fr
}

// ResolveKernel returns what res named the kernel address addr the first
// time.
func (f *Frames) ResolveKernel(addr uint64) symbolizer.Frame {
	if fr, ok := f.kernel[addr]; ok {
		return fr
	}
	fr := f.res.ResolveKernel(addr)
	f.kernel[addr] = fr
	return fr
}
