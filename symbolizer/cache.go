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

// fileCache holds the objects in use, keyed by build id (or by
// device, inode, mtime and size for files without one), and bounds the
// bytes of their loaded tables with an LRU: when over the bound, the least
// recently used tables are dropped (their object keeps its open file and
// reloads them if needed again). An object no process maps any more is
// closed when its tables are evicted, or objectLinger after its last
// process went away, whichever comes first.
type fileCache struct {
	limit int64

	mu     sync.Mutex
	byKey  map[string]*object
	byFile map[string]*object // file key -> object, to skip re-reading headers
	// byInode finds the object of a file by its device and inode, which is
	// all the kernel says of the mappings of a process that has exited
	// (see Symbolizer.UseKernelMappings).
	byInode  map[proc.Inode]*object
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

func newFileCache(limit int64) *fileCache {
	return &fileCache{limit: limit, byKey: make(map[string]*object), byFile: make(map[string]*object),
		byInode: make(map[proc.Inode]*object)}
}

// lookupInode returns the object open for the file with that device and
// inode, with a new reference.
func (c *fileCache) lookupInode(in proc.Inode) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.byInode[in]; o != nil {
		o.refs++
		return o
	}
	return nil
}

// lookupFile returns the object already open for a file key, with a new
// reference.
func (c *fileCache) lookupFile(fkey string) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.byFile[fkey]; o != nil {
		o.refs++
		return o
	}
	return nil
}

// add registers a freshly opened object, the file of key fkey and inode
// in (zero when unknown), and returns the object to use with a new
// reference: an existing one with the same build id wins, and the new one
// is closed.
func (c *fileCache) add(o *object, fkey string, in proc.Inode) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(time.Now())
	if o.buildID != "" {
		o.key = "b:" + o.buildID
	} else {
		o.key = fkey
	}
	if old := c.byKey[o.key]; old != nil {
		o.close()
		old.refs++
		if fkey != "" {
			c.byFile[fkey] = old
		}
		if in != (proc.Inode{}) {
			c.byInode[in] = old
		}
		return old
	}
	c.byKey[o.key] = o
	if fkey != "" {
		c.byFile[fkey] = o
	}
	if in != (proc.Inode{}) {
		c.byInode[in] = o
	}
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
		e.o.tabs.Store(nil)
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
	for k, v := range c.byFile {
		if v == o {
			delete(c.byFile, k)
		}
	}
	for k, v := range c.byInode {
		if v == o {
			delete(c.byInode, k)
		}
	}
	if o.charged != 0 {
		c.bytes -= o.charged
		o.charged = 0
		c.loaded--
	}
	c.unlink(o)
	c.openObjs--
	o.close()
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
		o.close()
	}
	c.byKey, c.byFile, c.byInode = map[string]*object{}, map[string]*object{}, map[proc.Inode]*object{}
	c.head, c.tail, c.bytes, c.loaded, c.openObjs = nil, nil, 0, 0, 0
}
