package web

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/scorch-profiler/scorch/symbolizer"
)

// tree is a merged call tree over the selected samples of one range
// (column 0) or of two ranges for a diff (columns 0 and 1), plus
// per-function self and total counts.
type tree struct {
	frames   []frame
	frameIdx map[frame]int32
	focusHit []bool // per frame: its name contains the focus string
	focus    string
	group    string // label key of the grouping frames under the root, "" for none

	nodes []node // nodes[0] is the root
	child map[edge]int32

	// Per frame, per column: samples where the frame is the leaf, and
	// samples where it appears at all (counted once per sample).
	fself, ftotal [][2]int64
	stamp         []int64 // per frame: last sample that counted it
	nsample       int64

	unit string
}

type node struct {
	frame       int32 // into tree.frames; -1 for the root
	parent      int32
	self, total [2]int64
}

type edge struct{ parent, frame int32 }

// kindGroup marks the frames a grouped tree puts under the root, one per
// value of the grouping label ("service: checkout"): they are not
// functions, so the top table leaves them out.
const kindGroup = symbolizer.KindJIT + 1

// noValue names the group of samples without the grouping label.
const noValue = "(none)"

// kindName is the colour class of kind k: symbolizer's names, and "group".
func kindName(k symbolizer.Kind) string {
	if k == kindGroup {
		return "group"
	}
	return k.String()
}

// groupNames are the words the grouping frames start with, by label key.
var groupNames = map[string]string{"service_name": "service", "container_id": "container", "comm": "process", "pid": "pid"}

func newTree(focus, group string) *tree {
	return &tree{
		frameIdx: make(map[frame]int32),
		focus:    focus,
		group:    group,
		nodes:    []node{{frame: -1, parent: -1}},
		child:    make(map[edge]int32),
	}
}

func (t *tree) intern(f frame) int32 {
	i, ok := t.frameIdx[f]
	if ok {
		return i
	}
	i = int32(len(t.frames))
	t.frames = append(t.frames, f)
	t.frameIdx[f] = i
	t.focusHit = append(t.focusHit, t.focus != "" && strings.Contains(strings.ToLower(f.name), t.focus))
	t.fself = append(t.fself, [2]int64{})
	t.ftotal = append(t.ftotal, [2]int64{})
	t.stamp = append(t.stamp, -1)
	return i
}

// addProfile merges the samples of l accepted by keep into column col;
// labels are the labels of l's window (a grouped tree looks there first
// for the grouping label, then in each sample's).
func (t *tree) addProfile(l *loaded, col int, keep func(i int) bool, labels map[string]string) {
	if t.unit == "" {
		t.unit = l.unit
	}
	remap := make([]int32, len(l.frames))
	for i, f := range l.frames {
		remap[i] = t.intern(f)
	}
	groupFrame := int32(-1) // the window's, when the window has the label
	groups := map[string]int32{}
	if t.group != "" {
		if v, ok := labels[t.group]; ok {
			groupFrame = t.groupFrame(v)
		}
	}
	// The samples of one stack share it (decode makes them so), most
	// often told apart by labels the tree does not show: the node where
	// a stack and group end is looked up once, and the samples after the
	// first walk up from it rather than down through the children's map.
	type path struct {
		st    *int32
		n     int
		group int32
	}
	leaves := map[path]int32{} // -1: the focus misses the stack
	var buf []int32
	for i, st := range l.stacks {
		v := l.values[i]
		if v == 0 || (keep != nil && !keep(i)) {
			continue
		}
		g := int32(-1)
		if t.group != "" {
			g = groupFrame
			if g < 0 {
				val := l.sampleLabels(i).first(t.group)
				var ok bool
				if g, ok = groups[val]; !ok {
					g = t.groupFrame(val)
					groups[val] = g
				}
			}
		}
		var pk path
		if len(st) > 0 {
			pk = path{unsafe.SliceData(st), len(st), g}
			if leaf, ok := leaves[pk]; ok {
				if leaf >= 0 {
					t.addAt(leaf, v, col)
				}
				continue
			}
		}
		buf = buf[:0]
		if g >= 0 {
			buf = append(buf, g)
		}
		hit := t.focus == ""
		for _, f := range st {
			g := remap[f]
			hit = hit || t.focusHit[g]
			buf = append(buf, g)
		}
		leaf := int32(-1)
		if hit {
			leaf = t.add(buf, v, col)
		}
		if len(st) > 0 {
			leaves[pk] = leaf
		}
	}
}

// groupFrame interns the grouping frame of label value v.
func (t *tree) groupFrame(v string) int32 {
	if v == "" {
		v = noValue
	}
	return t.intern(frame{groupNames[t.group] + ": " + v, kindGroup})
}

// add merges one root-first stack of tree frames with value v.
func (t *tree) add(stack []int32, v int64, col int) (leaf int32) {
	cur := int32(0)
	t.nodes[0].total[col] += v
	t.nsample++
	for _, f := range stack {
		n := t.childOf(cur, f)
		t.nodes[n].total[col] += v
		if t.stamp[f] != t.nsample {
			t.stamp[f] = t.nsample
			t.ftotal[f][col] += v
		}
		cur = n
	}
	t.nodes[cur].self[col] += v
	if cur != 0 {
		t.fself[t.nodes[cur].frame][col] += v
	}
	return cur
}

// addAt adds a sample of value v in column col whose stack ends at node
// leaf (which add returned for the same stack): what add would add,
// walking up from leaf.
func (t *tree) addAt(leaf int32, v int64, col int) {
	t.nodes[0].total[col] += v
	t.nsample++
	t.nodes[leaf].self[col] += v
	if leaf != 0 {
		t.fself[t.nodes[leaf].frame][col] += v
	}
	for n := leaf; n != 0; n = t.nodes[n].parent {
		t.nodes[n].total[col] += v
		if f := t.nodes[n].frame; t.stamp[f] != t.nsample {
			t.stamp[f] = t.nsample
			t.ftotal[f][col] += v
		}
	}
}

// prune marks the nodes to keep: those at least minFrac of the root's
// total wide in some column (all when minFrac is 0), and of those, when
// more than max remain (max > 0), the max with the largest totals (both
// columns). A node's totals never exceed its parent's and parents precede
// children in t.nodes, so the kept nodes form a tree rooted at the root.
func (t *tree) prune(max int, minFrac float64) (keep []bool, dropped int) {
	keep = make([]bool, len(t.nodes))
	root := t.nodes[0].total
	wide := func(n *node) bool {
		for c := range n.total {
			if n.total[c] > 0 && float64(n.total[c]) >= minFrac*float64(root[c]) {
				return true
			}
		}
		return false
	}
	eligible := 0
	for i := range t.nodes {
		n := &t.nodes[i]
		if i == 0 || (keep[n.parent] && (minFrac <= 0 || wide(n))) {
			keep[i] = true
			eligible++
		}
	}
	if max <= 0 || eligible <= max {
		return keep, len(t.nodes) - eligible
	}
	sum := func(n *node) int64 { return n.total[0] + n.total[1] }
	totals := make([]int64, 0, eligible)
	for i := range t.nodes {
		if keep[i] {
			totals = append(totals, sum(&t.nodes[i]))
		}
	}
	slices.SortFunc(totals, func(a, b int64) int { return cmpDesc(a, b) })
	thr := totals[max-1]
	// Every node above the threshold is kept; ties fill what is left.
	ties := max
	for _, v := range totals[:max] {
		if v > thr {
			ties--
		}
	}
	kept := 0
	for i := range t.nodes {
		n := &t.nodes[i]
		if !keep[i] {
			continue
		}
		v := sum(n)
		keep[i] = v > thr || (v == thr && ties > 0 && (i == 0 || keep[n.parent]))
		if keep[i] {
			if v == thr {
				ties--
			}
			kept++
		}
	}
	return keep, len(t.nodes) - kept
}

// children returns, for every kept node, its kept children sorted by frame
// name: kids[start[i]:start[i+1]] are node i's.
func (t *tree) children(keep []bool) (start []int32, kids []int32) {
	start = make([]int32, len(t.nodes)+1)
	for i, n := range t.nodes[1:] {
		if keep[i+1] {
			start[n.parent+1]++
		}
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	kids = make([]int32, start[len(t.nodes)])
	fill := slices.Clone(start[:len(t.nodes)])
	for i, n := range t.nodes[1:] {
		if keep[i+1] {
			kids[fill[n.parent]] = int32(i + 1)
			fill[n.parent]++
		}
	}
	for i := range t.nodes {
		ks := kids[start[i]:start[i+1]]
		if len(ks) > 1 {
			slices.SortFunc(ks, func(a, b int32) int {
				return strings.Compare(t.frames[t.nodes[a].frame].name, t.frames[t.nodes[b].frame].name)
			})
		}
	}
	return start, kids
}

// appendJSON appends the tree as the flamegraph (diff=false) or diff
// (diff=true) response body, with extra fields (already JSON-encoded
// "key":value pairs) in front, pruned as prune says. Only the names of the
// frames of the nodes sent are sent: a large range can hold tens of
// thousands of functions, of which a flame graph shows a few hundred.
func (t *tree) appendJSON(b []byte, extra []byte, diff bool, maxNodes int, minFrac float64) []byte {
	keep, dropped := t.prune(maxNodes, minFrac)
	// The frames of kept nodes, numbered in order of first use.
	index := make([]int32, len(t.frames))
	for i := range index {
		index[i] = -1
	}
	var used []int32
	for i := 1; i < len(t.nodes); i++ {
		if f := t.nodes[i].frame; keep[i] && index[f] < 0 {
			index[f] = int32(len(used))
			used = append(used, f)
		}
	}
	b = append(b, '{')
	b = append(b, extra...)
	b = append(b, `"pruned":`...)
	b = strconv.AppendInt(b, int64(dropped), 10)
	b = append(b, `,"unit":`...)
	b = appendString(b, t.unit)
	b = append(b, `,"kinds":`...)
	b = append(b, kindsJSON...)
	b = append(b, `,"names":[`...)
	for i, f := range used {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.frames[f].name)
	}
	b = append(b, `],"frame_kinds":[`...)
	for i, f := range used {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(t.frames[f].kind), 10)
	}
	b = append(b, `],"root":`...)
	start, kids := t.children(keep)
	b = t.appendNode(b, 0, start, kids, index, diff)
	return append(b, '}')
}

// appendNode writes node i as {"f":name,"s":self,"t":total,"c":[...]},
// name indexing the sent names (index maps frames to it; -1 for the root);
// in a diff "s" and "t" are [a,b] pairs.
func (t *tree) appendNode(b []byte, i int32, start, kids, index []int32, diff bool) []byte {
	n := &t.nodes[i]
	b = append(b, `{"f":`...)
	f := int32(-1)
	if i > 0 {
		f = index[n.frame]
	}
	b = strconv.AppendInt(b, int64(f), 10)
	b = append(b, `,"s":`...)
	b = appendVal(b, n.self, diff)
	b = append(b, `,"t":`...)
	b = appendVal(b, n.total, diff)
	if ks := kids[start[i]:start[i+1]]; len(ks) > 0 {
		b = append(b, `,"c":[`...)
		for j, k := range ks {
			if j > 0 {
				b = append(b, ',')
			}
			b = t.appendNode(b, k, start, kids, index, diff)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func appendVal(b []byte, v [2]int64, diff bool) []byte {
	if !diff {
		return strconv.AppendInt(b, v[0], 10)
	}
	b = append(b, '[')
	b = strconv.AppendInt(b, v[0], 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, v[1], 10)
	return append(b, ']')
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// kindsJSON is the JSON array of colour class names that "frame_kinds"
// index: ["user","kernel","jit","group"], in symbolizer.Kind order and
// kindGroup last.
var kindsJSON = func() []byte {
	b := []byte{'['}
	for k := symbolizer.KindUser; k <= kindGroup; k++ {
		if k > symbolizer.KindUser {
			b = append(b, ',')
		}
		b = appendString(b, kindName(k))
	}
	return append(b, ']')
}()

// match totals, per column, the samples whose stack has a frame whose
// name contains text (lower-case; names are compared lower-cased), each
// sample once however many of its frames match, and counts the functions
// that match.
func (t *tree) match(text string) (matched [2]int64, functions int) {
	hit := make([]bool, len(t.frames))
	for i, f := range t.frames {
		if strings.Contains(strings.ToLower(f.name), text) {
			hit[i] = true
			if t.ftotal[i] != [2]int64{} {
				functions++
			}
		}
	}
	// Parents precede children: under[i] says node i or an ancestor
	// matched, so its samples are counted already.
	under := make([]bool, len(t.nodes))
	for i := 1; i < len(t.nodes); i++ {
		n := &t.nodes[i]
		if under[n.parent] {
			under[i] = true
		} else if hit[n.frame] {
			under[i] = true
			matched[0] += n.total[0]
			matched[1] += n.total[1]
		}
	}
	return matched, functions
}

// topRow is one function in the top table.
type topRow struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Self  int64  `json:"self"`
	Total int64  `json:"total"`
}

// top returns column 0's per-function counts sorted by by ("self", "total"
// or "name"), at most limit rows.
func (t *tree) top(by string, limit int) []topRow {
	rows := make([]topRow, 0, len(t.frames))
	for i, f := range t.frames {
		if t.ftotal[i][0] == 0 || f.kind == kindGroup {
			continue
		}
		rows = append(rows, topRow{f.name, f.kind.String(), t.fself[i][0], t.ftotal[i][0]})
	}
	slices.SortFunc(rows, func(a, b topRow) int {
		switch by {
		case "total":
			if a.Total != b.Total {
				return cmpDesc(a.Total, b.Total)
			}
		case "name":
			if c := strings.Compare(a.Name, b.Name); c != 0 {
				return c
			}
		}
		if a.Self != b.Self {
			return cmpDesc(a.Self, b.Self)
		}
		if a.Total != b.Total {
			return cmpDesc(a.Total, b.Total)
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(rows) > limit {
		rows = rows[:limit]
	}
	return rows
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// sandwich returns the callers and the callees of the function named fn in
// column 0 and 1, as two trees whose root has one child, fn: in callers,
// fn's children are its callers and theirs their callers, up to the
// roots of the stacks; in callees, fn's children are what it calls, as in
// the flame graph. A stack that holds fn several times (recursion) counts
// once, from its outermost fn. found is false if no sample has fn.
func (t *tree) sandwich(fn string) (callers, callees *tree, found bool) {
	sub := func() *tree {
		return &tree{frames: t.frames, unit: t.unit, nodes: []node{{frame: -1, parent: -1}}, child: make(map[edge]int32)}
	}
	callers, callees = sub(), sub()
	hit := make([]bool, len(t.frames))
	fnFrame := int32(-1)
	for i, f := range t.frames {
		if f.name == fn && f.kind != kindGroup {
			hit[i] = true
			if fnFrame < 0 {
				fnFrame = int32(i)
			}
		}
	}
	if fnFrame < 0 {
		return callers, callees, false
	}
	// mapped[i] is node i's node in callees when i is fn's outermost node
	// of its stack or under one; 0 (the root) otherwise.
	mapped := make([]int32, len(t.nodes))
	var path []int32
	for i := 1; i < len(t.nodes); i++ {
		n := &t.nodes[i]
		switch {
		case mapped[n.parent] != 0:
			mapped[i] = callees.addChild(mapped[n.parent], n.frame, n.self, n.total)
		case hit[n.frame]:
			found = true
			mapped[i] = callees.addChild(0, fnFrame, n.self, n.total)
			callees.nodes[0].total = addVal(callees.nodes[0].total, n.total)
			// Its callers, innermost first.
			path = append(path[:0], fnFrame)
			for p := n.parent; p > 0; p = t.nodes[p].parent {
				path = append(path, t.nodes[p].frame)
			}
			cur := int32(0)
			for j, f := range path {
				var self [2]int64
				if j == len(path)-1 {
					self = n.total // the stacks end here, at their root
				}
				cur = callers.addChild(cur, f, self, n.total)
			}
			callers.nodes[0].total = addVal(callers.nodes[0].total, n.total)
		}
	}
	return callers, callees, found
}

// childOf returns parent's child of frame f, made if new.
func (t *tree) childOf(parent, f int32) int32 {
	e := edge{parent, f}
	n, ok := t.child[e]
	if !ok {
		n = int32(len(t.nodes))
		t.nodes = append(t.nodes, node{frame: f, parent: parent})
		t.child[e] = n
	}
	return n
}

// addChild adds self and total to parent's child of frame f, made if new,
// and returns it.
func (t *tree) addChild(parent, f int32, self, total [2]int64) int32 {
	n := t.childOf(parent, f)
	t.nodes[n].self = addVal(t.nodes[n].self, self)
	t.nodes[n].total = addVal(t.nodes[n].total, total)
	return n
}

func addVal(a, b [2]int64) [2]int64 { return [2]int64{a[0] + b[0], a[1] + b[1]} }
