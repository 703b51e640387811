package exporter

import "github.com/scorch-profiler/scorch/symbolizer"

// Frames is a Resolver that remembers what it named, for builders of the
// same samples: the agent adds each sample twice, to its target's profile
// and to the merge of all targets, and with one Frames between them each
// address is named once. A builder keeps a location for each address it
// has seen, so both ask for an address at the same sample, its first:
// Reset after each sample, once every builder has added it, keeps no more
// than one sample's frames. It is not safe for concurrent use.
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

// Reset forgets what f named.
func (f *Frames) Reset() {
	clear(f.user)
	clear(f.kernel)
}
