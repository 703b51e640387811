package symbolizer

import (
	"sync"
	"sync/atomic"
	"time"

	proc "github.com/scorch-profiler/scorch/internal/process"
)

// objectLinger is how long an object no process maps any more stays open
// (a variable for tests). Within it a process that runs the same file again,
// or a window still naming an exited process's addresses, finds the tables
// loaded; after it the file is closed and its mapped sections unmapped. The
// byte bound alone would not do: mapped sections count for a fraction of
// their size (most pages are never touched), so on a host that runs many
// distinct short-lived binaries (builds, tests, CI jobs) hundreds of MB of
// them stayed mapped and resident.
var objectLinger = time.Minute

// fileCache holds the objects in use, keyed by content key (the build id,
// or device, inode, mtime and size for files without one), and bounds the
// bytes of their loaded tables with an LRU: when over the bound, the least
// recently used tables are dropped (their object keeps its open file and
// reloads them if needed again). An object no process maps any more is
// closed when its tables are evicted, or objectLinger after its last
// process went away, whichever comes first.
type fileCache struct {
	limit  int64
	pfiles *proc.Files // the opened files; each object holds one reference

	mu       sync.Mutex
	byKey    map[string]*object
	head     *object // most recently used
	tail     *object
	bytes    int64
	loaded   int
	evicted  atomic.Uint64
	openObjs int
	idle     []idleObject // objects whose refs dropped to 0, oldest first
}

type idleObject struct {
	o     *object
	since time.Time
}

func newFileCache(limit int64, pfiles *proc.Files) *fileCache {
	return &fileCache{limit: limit, pfiles: pfiles, byKey: make(map[string]*object)}
}

// objectOf returns the object of the opened file pf, with a new reference,
// and takes over the caller's reference to pf: an object with the same
// content key (the same file, or another with the same build id) is used
// when there is one; else pf gets a new object, whose first process's root
// is root.
func (c *fileCache) objectOf(pf *proc.File, root string) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(time.Now())
	if old := c.byKey[pf.ContentKey]; old != nil {
		c.pfiles.Release(pf)
		old.refs++
		return old
	}
	o := &object{key: pf.ContentKey, pf: pf, path: pf.Path, root: root}
	c.byKey[o.key] = o
	c.openObjs++
	o.refs = 1
	c.pushFront(o)
	return o
}

// ref adds a reference to o.
func (c *fileCache) ref(o *object) {
	c.mu.Lock()
	o.refs++
	c.mu.Unlock()
}

// release drops a process's reference.
func (c *fileCache) release(o *object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	now := time.Now()
	if o.refs <= 0 {
		if o.tabs.Load() == nil {
			c.remove(o)
		} else {
			o.idleSince = now
			c.idle = append(c.idle, idleObject{o, now})
		}
	}
	c.expireLocked(now)
}

// expireLocked closes the objects no process has mapped for objectLinger.
// It runs whenever a process is forgotten or a file opened, which is as
// often as anything could have become idle.
func (c *fileCache) expireLocked(now time.Time) {
	n := 0
	for _, e := range c.idle {
		if e.o.refs > 0 || !e.o.idleSince.Equal(e.since) {
			n++ // in use again, or idle again since: a later entry stands
			continue
		}
		if now.Sub(e.since) < objectLinger {
			break
		}
		n++
		c.remove(e.o)
	}
	if n > 0 {
		c.idle = append(c.idle[:0], c.idle[n:]...)
	}
}

// touch marks o as used and updates the bytes charged for its tables
// (DWARF tables grow as units load).
func (c *fileCache) touch(o *object) {
	t := o.tabs.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey[o.key] != o {
		return
	}
	if o != c.head {
		c.unlink(o)
		c.pushFront(o)
	}
	if t != nil {
		c.setCharge(o, t.size())
	}
}

// charge records the size of freshly loaded tables and evicts if needed.
func (c *fileCache) charge(o *object, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey[o.key] != o {
		return
	}
	c.setCharge(o, n)
}

func (c *fileCache) setCharge(o *object, n int64) {
	if o.charged == 0 && n > 0 {
		c.loaded++
	}
	c.bytes += n - o.charged
	o.charged = n
	// Evict from the least recently used end. The object being charged is
	// in use right now and stays, even when it alone is over the limit
	// (evicting it would reparse it on every lookup).
	for c.bytes > c.limit {
		v := c.tail
		for v != nil && (v.charged == 0 || v == o) {
			v = v.lruPrev
		}
		if v == nil {
			break
		}
		c.evict(v)
	}
}

func (c *fileCache) evict(o *object) {
	o.tabs.Store(nil)
	c.bytes -= o.charged
	o.charged = 0
	c.loaded--
	c.evicted.Add(1)
	if o.refs <= 0 {
		c.remove(o)
	}
}

func (c *fileCache) remove(o *object) {
	if c.byKey[o.key] != o {
		return
	}
	delete(c.byKey, o.key)
	o.tabs.Store(nil)
	if o.charged != 0 {
		c.bytes -= o.charged
		o.charged = 0
		c.loaded--
	}
	c.unlink(o)
	c.openObjs--
	c.pfiles.Release(o.pf)
}

func (c *fileCache) pushFront(o *object) {
	o.lruPrev, o.lruNext = nil, c.head
	if c.head != nil {
		c.head.lruPrev = o
	}
	c.head = o
	if c.tail == nil {
		c.tail = o
	}
}

func (c *fileCache) unlink(o *object) {
	if o.lruPrev != nil {
		o.lruPrev.lruNext = o.lruNext
	} else if c.head == o {
		c.head = o.lruNext
	}
	if o.lruNext != nil {
		o.lruNext.lruPrev = o.lruPrev
	} else if c.tail == o {
		c.tail = o.lruPrev
	}
	o.lruPrev, o.lruNext = nil, nil
}

func (c *fileCache) stats() (bytes int64, entries, files int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, c.loaded, c.openObjs
}

func (c *fileCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.byKey {
		o.tabs.Store(nil)
		c.pfiles.Release(o.pf)
	}
	c.byKey = map[string]*object{}
	c.head, c.tail, c.bytes, c.loaded, c.openObjs = nil, nil, 0, 0, 0
}
