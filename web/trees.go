package web

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// trees keeps the last few call trees built for one range, by the windows,
// filters and focus they were built from, so that the requests the page
// makes for one view (flame graph, top table, search) merge the profiles
// once. Requests for a tree being built wait for that build rather than
// start their own. A tree is not modified once built.
type trees struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	entries  []*treeEntry // least recently used first
}

type treeEntry struct {
	key   string
	done  chan struct{} // closed when t and err are set
	t     *tree
	sp    span
	n     int
	err   error
	bytes int64 // estimated size of t, set with it
}

const (
	// maxTrees is how many trees a handler keeps: a view's and a few
	// before it.
	maxTrees = 4
	// maxTreeBytes bounds their estimated size; the newest is kept
	// whatever its size.
	maxTreeBytes = 8 << 20
)

// treeKey names what a tree of sel is built from.
func treeKey(focus, group string, sel []selected) string {
	var b strings.Builder
	b.WriteString(focus)
	b.WriteByte(0)
	b.WriteString(group)
	for _, s := range sel {
		b.WriteByte(0)
		b.WriteString(s.w.ID)
		for _, f := range s.rest {
			fmt.Fprintf(&b, "\x01%s=%q", f.key, f.values)
		}
	}
	return b.String()
}

// get returns the tree under key, building it with build if no request
// has. A build that failed is not kept: the next request builds again.
func (c *trees) get(ctx context.Context, key string, build func() (*tree, span, int, error)) (*tree, span, int, error) {
	c.mu.Lock()
	for i, e := range c.entries {
		if e.key == key {
			c.entries = append(append(c.entries[:i:i], c.entries[i+1:]...), e)
			c.mu.Unlock()
			select {
			case <-e.done:
			case <-ctx.Done():
				return nil, span{}, 0, ctx.Err()
			}
			if e.err != nil {
				return build() // the builder failed (or gave up): on our own
			}
			return e.t, e.sp, e.n, nil
		}
	}
	e := &treeEntry{key: key, done: make(chan struct{})}
	if len(c.entries) >= c.max {
		c.entries = c.entries[1:]
	}
	c.entries = append(c.entries, e)
	c.mu.Unlock()

	e.t, e.sp, e.n, e.err = build()
	c.mu.Lock()
	if e.err != nil {
		if i := indexOf(c.entries, e); i >= 0 {
			c.entries = append(c.entries[:i:i], c.entries[i+1:]...)
		}
	} else {
		e.t.seal()
		e.bytes = e.t.bytes()
		var sum int64
		for _, o := range c.entries {
			sum += o.bytes
		}
		for sum > c.maxBytes && len(c.entries) > 1 && c.entries[0] != e {
			sum -= c.entries[0].bytes
			c.entries = c.entries[1:]
		}
	}
	c.mu.Unlock()
	close(e.done)
	return e.t, e.sp, e.n, e.err
}

func indexOf(es []*treeEntry, e *treeEntry) int {
	for i := range es {
		if es[i] == e {
			return i
		}
	}
	return -1
}

// seal drops what only building a tree needs.
func (t *tree) seal() {
	t.child, t.frameIdx, t.stamp, t.focusHit = nil, nil, nil, nil
}

// bytes estimates the memory a sealed tree holds.
func (t *tree) bytes() int64 {
	n := int64(len(t.nodes))*int64(unsafe.Sizeof(node{})) + int64(len(t.frames))*(int64(unsafe.Sizeof(frame{}))+2*int64(unsafe.Sizeof([2]int64{})))
	for _, f := range t.frames {
		n += int64(len(f.name))
	}
	return n
}
