package sampler

import "fmt"

// rowAllocator hands out contiguous slices of the unwind_rows array, first
// fit. Tables are immutable, so a slice is allocated once per file and freed
// when no process maps the file any more.
type rowAllocator struct {
	size uint32
	free []extent // sorted by start, never adjacent (merged on free)
	used uint32
}

type extent struct{ start, n uint32 }

func newRowAllocator(size uint32) *rowAllocator {
	a := &rowAllocator{size: size}
	if size > 0 {
		a.free = []extent{{0, size}}
	}
	return a
}

// alloc returns the first row of a free slice of n rows.
func (a *rowAllocator) alloc(n uint32) (uint32, bool) {
	if n == 0 {
		return 0, false
	}
	for i, e := range a.free {
		if e.n < n {
			continue
		}
		if e.n == n {
			a.free = append(a.free[:i], a.free[i+1:]...)
		} else {
			a.free[i] = extent{e.start + n, e.n - n}
		}
		a.used += n
		return e.start, true
	}
	return 0, false
}

// release returns [start, start+n) to the free list.
func (a *rowAllocator) release(start, n uint32) error {
	if n == 0 || start > a.size || n > a.size-start {
		return fmt.Errorf("release of rows [%d, +%d) outside the table of %d rows", start, n, a.size)
	}
	i := 0
	for i < len(a.free) && a.free[i].start < start {
		i++
	}
	if i > 0 && a.free[i-1].start+a.free[i-1].n > start || i < len(a.free) && start+n > a.free[i].start {
		return fmt.Errorf("double release of rows [%d, +%d)", start, n)
	}
	a.free = append(a.free, extent{})
	copy(a.free[i+1:], a.free[i:])
	a.free[i] = extent{start, n}
	// Merge with the next, then with the previous extent.
	if i+1 < len(a.free) && a.free[i].start+a.free[i].n == a.free[i+1].start {
		a.free[i].n += a.free[i+1].n
		a.free = append(a.free[:i+1], a.free[i+2:]...)
	}
	if i > 0 && a.free[i-1].start+a.free[i-1].n == a.free[i].start {
		a.free[i-1].n += a.free[i].n
		a.free = append(a.free[:i], a.free[i+1:]...)
	}
	a.used -= n
	return nil
}
