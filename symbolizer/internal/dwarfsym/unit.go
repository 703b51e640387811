package dwarfsym

import (
	"debug/dwarf"
	"fmt"
	"io"
	"sort"
)

// loadedUnit is the lookup structure of one compilation unit.
type loadedUnit struct {
	// Segments partition the unit's code: segment i covers [segLo[i],
	// segLo[i+1]) and names the deepest function node there (segNode[i],
	// -1 for none); segRow[i] is the index of the first row at or after
	// segLo[i]. Kept in separate arrays so that the binary search touches
	// only addresses.
	segLo   []uint64
	segNode []int32
	segRow  []int32
	nodes   []node
	rows    []row // sorted by addr; file -1 ends a sequence
	files   []string
}

type segment struct {
	lo   uint64
	node int32
}

// node is a function (parent -1) or an inlined call of one inside its
// parent node.
type node struct {
	name      string
	parent    int32
	callFile  int32 // index into files, -1 unknown: where in parent the call is
	callLine  int32
	startLine int32
}

type row struct {
	addr uint64
	file int32 // -1: end of sequence (no line)
	line int32
}

// resolve returns the lines at pc or nil.
func (lu *loadedUnit) resolve(pc uint64) []Line {
	// The segment: the last with segLo <= pc.
	los := lu.segLo
	lo, hi := 0, len(los)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if los[m] <= pc {
			lo = m + 1
		} else {
			hi = m
		}
	}
	s := lo - 1
	if s < 0 {
		return nil
	}
	n := lu.segNode[s]
	if n < 0 {
		return nil
	}
	depth := 1
	for p := lu.nodes[n].parent; p >= 0; p = lu.nodes[p].parent {
		depth++
	}
	lines := make([]Line, depth)
	nd := &lu.nodes[n]
	lines[0] = Line{Function: nd.name, StartLine: int64(nd.startLine)}
	if r := lu.row(pc, s); r != nil {
		lines[0].File = lu.file(r.file)
		lines[0].Line = int64(r.line)
	}
	for i := 1; nd.parent >= 0; i++ {
		p := &lu.nodes[nd.parent]
		lines[i] = Line{Function: p.name, File: lu.file(nd.callFile), Line: int64(nd.callLine), StartLine: int64(p.startLine)}
		nd = p
	}
	return lines
}

// row returns the line row covering pc, which is in segment s, or nil.
// Only the rows from the one covering the segment start to the next
// segment's start are searched.
func (lu *loadedUnit) row(pc uint64, s int) *row {
	rows := lu.rows
	lo, hi := int(lu.segRow[s]), len(rows)
	if s+1 < len(lu.segRow) {
		hi = int(lu.segRow[s+1]) + 1
	}
	if lo > 0 {
		lo-- // the row covering the segment start may begin before it
	}
	hi = min(hi, len(rows))
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rows[m].addr <= pc {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || rows[lo-1].addr > pc || rows[lo-1].file < 0 {
		return nil
	}
	return &rows[lo-1]
}

func (lu *loadedUnit) file(i int32) string {
	if i < 0 || int(i) >= len(lu.files) {
		return ""
	}
	return lu.files[i]
}

// coverage returns the address ranges of the unit's functions.
func (lu *loadedUnit) coverage() [][2]uint64 {
	var out [][2]uint64
	for i, lo := range lu.segLo {
		if lu.segNode[i] < 0 || i+1 >= len(lu.segLo) {
			continue
		}
		hi := lu.segLo[i+1]
		if n := len(out); n > 0 && out[n-1][1] == lo {
			out[n-1][1] = hi
		} else {
			out = append(out, [2]uint64{lo, hi})
		}
	}
	return out
}

// setSegments stores segs in lu's arrays and indexes the rows by segment.
func (lu *loadedUnit) setSegments(segs []segment) {
	lu.segLo = make([]uint64, len(segs))
	lu.segNode = make([]int32, len(segs))
	lu.segRow = make([]int32, len(segs))
	r := 0
	for i, s := range segs {
		lu.segLo[i] = s.lo
		lu.segNode[i] = s.node
		for r < len(lu.rows) && lu.rows[r].addr < s.lo {
			r++
		}
		lu.segRow[i] = int32(r)
	}
}

// bytes estimates the memory held by lu.
func (lu *loadedUnit) bytes() int64 {
	n := int64(len(lu.segLo))*16 + int64(len(lu.nodes))*32 + int64(len(lu.rows))*16 + int64(len(lu.files))*16 + 128
	seen := make(map[string]struct{}, len(lu.nodes))
	for i := range lu.nodes {
		if _, ok := seen[lu.nodes[i].name]; !ok {
			seen[lu.nodes[i].name] = struct{}{}
			n += int64(len(lu.nodes[i].name))
		}
	}
	for _, f := range lu.files {
		n += int64(len(f))
	}
	return n
}

// dieInfo is what naming a function needs from one DIE.
type dieInfo struct {
	name, linkage string
	ref           dwarf.Offset // DW_AT_abstract_origin or DW_AT_specification, 0 if none
	declLine      int64
}

// interval is one address range of a node while the unit is built.
type interval struct {
	lo, hi uint64
	depth  int32
	node   int32
}

// unitParser holds the state of loading one unit.
type unitParser struct {
	t      *Table
	d      *dwarf.Data
	off    dwarf.Offset
	info   map[dwarf.Offset]*dieInfo
	own    []*dieInfo // per node: the naming attributes of its own entry
	ivs    []interval
	lu     *loadedUnit
	seeker *dwarf.Reader // for references outside what we walked
	names  map[string]string
	// callFiles maps line-table file indexes to lu.files indexes.
	callFiles []int32
}

// parseUnit loads unit u.
func (t *Table) parseUnit(u int32) (lu *loadedUnit, err error) {
	off := t.units[u].off
	if t.sec != nil {
		off += dwarf.Offset(t.units[u].start) // for messages
	}
	d, err := t.unitData(u)
	if err != nil {
		return nil, fmt.Errorf("unit at 0x%x: %w", off, err)
	}
	p := &unitParser{
		t:     t,
		d:     d,
		off:   off,
		info:  make(map[dwarf.Offset]*dieInfo),
		lu:    &loadedUnit{},
		names: make(map[string]string),
	}
	r := d.Reader()
	r.Seek(t.units[u].off)
	cu, err := r.Next()
	if err != nil {
		return nil, fmt.Errorf("unit at 0x%x: %w", off, err)
	}
	if cu == nil {
		return nil, fmt.Errorf("unit at 0x%x: no entry", off)
	}
	if err := p.readLines(cu); err != nil {
		return nil, err
	}
	if cu.Children {
		if err := p.walk(r); err != nil {
			return nil, err
		}
	}
	if err := p.nameNodes(); err != nil {
		return nil, err
	}
	p.lu.setSegments(flatten(p.ivs))
	return p.lu, nil
}

// readLines reads the unit's line table into sorted rows, and maps the
// table's file indexes (used by DW_AT_call_file) to indexes in lu.files.
func (p *unitParser) readLines(cu *dwarf.Entry) error {
	lr, err := p.d.LineReader(cu)
	if err != nil {
		return fmt.Errorf("unit at 0x%x: line table: %w", p.off, err)
	}
	if lr == nil {
		return nil
	}
	idx := make(map[*dwarf.LineFile]int32)
	fileOf := func(f *dwarf.LineFile) int32 {
		if f == nil {
			return -1
		}
		i, ok := idx[f]
		if !ok {
			i = int32(len(p.lu.files))
			idx[f] = i
			p.lu.files = append(p.lu.files, f.Name)
		}
		return i
	}
	var (
		rows  []row
		seq   []row
		le    dwarf.LineEntry
		count int
	)
	for {
		if err := lr.Next(&le); err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("unit at 0x%x: line table: %w", p.off, err)
		}
		if count++; count > maxUnitRows {
			return fmt.Errorf("unit at 0x%x: line table has more than %d rows", p.off, maxUnitRows)
		}
		rw := row{addr: le.Address, file: -1, line: int32(le.Line)}
		if !le.EndSequence {
			rw.file = fileOf(le.File)
		}
		// Of rows at one address the last one wins (as in binutils).
		if n := len(seq); n > 0 && seq[n-1].addr == rw.addr && !le.EndSequence {
			seq[n-1] = rw
		} else {
			seq = append(seq, rw)
		}
		if le.EndSequence {
			if len(seq) > 1 && p.t.validCode(seq[0].addr, rw.addr) {
				rows = append(rows, seq...)
			}
			seq = seq[:0]
		}
	}
	// End rows sort before other rows at the same address, so that a
	// sequence starting where another ends wins.
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].addr != rows[j].addr {
			return rows[i].addr < rows[j].addr
		}
		return rows[i].file < 0 && rows[j].file >= 0
	})
	p.lu.rows = rows
	// Files are also referenced by index (DW_AT_call_file): map every
	// entry of the table.
	files := lr.Files()
	p.callFiles = make([]int32, len(files))
	for i, f := range files {
		p.callFiles[i] = fileOf(f)
	}
	return nil
}

// attrMIPSLinkageName is the pre-DWARF-4 spelling of DW_AT_linkage_name.
const attrMIPSLinkageName dwarf.Attr = 0x2007

// tagGNUCallSite is DW_TAG_GNU_call_site, the pre-DWARF-5 DW_TAG_call_site.
const tagGNUCallSite dwarf.Tag = 0x4109

// walk visits the unit's entries after the unit entry, adding a node per
// function and per inlined call with code.
func (p *unitParser) walk(r *dwarf.Reader) error {
	// stack[i] is the node enclosing the entries at depth i+1 (-1: none).
	stack := make([]int32, 1, 32)
	stack[0] = -1
	for len(stack) > 0 {
		e, err := r.Next()
		if err != nil {
			return fmt.Errorf("unit at 0x%x: %w", p.off, err)
		}
		if e == nil {
			return nil
		}
		if e.Tag == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		enclosing := stack[len(stack)-1]
		inner := enclosing
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit, dwarf.TagTypeUnit, dwarf.TagSkeletonUnit:
			return nil // a unit without its terminating null entry
		case dwarf.TagSubprogram:
			p.info[e.Offset] = infoOf(e)
			n, err := p.addNode(e, -1, len(stack))
			if err != nil {
				return err
			}
			inner = n // -1 for declarations and abstract instances
		case dwarf.TagInlinedSubroutine:
			n, err := p.addNode(e, enclosing, len(stack))
			if err != nil {
				return err
			}
			if n >= 0 {
				inner = n
			}
		case dwarf.TagVariable, dwarf.TagFormalParameter, dwarf.TagMember,
			dwarf.TagBaseType, dwarf.TagPointerType, dwarf.TagConstType,
			dwarf.TagTypedef, dwarf.TagEnumerationType, dwarf.TagArrayType,
			dwarf.TagSubroutineType, dwarf.TagLabel, dwarf.TagCallSite,
			tagGNUCallSite, dwarf.TagTemplateTypeParameter,
			dwarf.TagTemplateValueParameter:
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		if e.Children {
			if len(stack) >= maxDepth {
				return fmt.Errorf("unit at 0x%x: entries nested deeper than %d at 0x%x", p.off, maxDepth, e.Offset)
			}
			stack = append(stack, inner)
		}
	}
	return nil
}

// infoOf extracts the naming attributes of e.
func infoOf(e *dwarf.Entry) *dieInfo {
	di := &dieInfo{}
	di.name, _ = e.Val(dwarf.AttrName).(string)
	if di.linkage, _ = e.Val(dwarf.AttrLinkageName).(string); di.linkage == "" {
		di.linkage, _ = e.Val(attrMIPSLinkageName).(string)
	}
	if ref, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
		di.ref = ref
	} else if ref, ok := e.Val(dwarf.AttrSpecification).(dwarf.Offset); ok {
		di.ref = ref
	}
	di.declLine, _ = e.Val(dwarf.AttrDeclLine).(int64)
	return di
}

// addNode adds a node for e if it has code, returning its index or -1.
func (p *unitParser) addNode(e *dwarf.Entry, parent int32, depth int) (int32, error) {
	if e.AttrField(dwarf.AttrLowpc) == nil && e.AttrField(dwarf.AttrRanges) == nil {
		return -1, nil
	}
	rs, err := p.d.Ranges(e)
	if err != nil {
		// Bad ranges of one function: drop the function, keep the unit.
		return -1, nil
	}
	idx := int32(len(p.lu.nodes))
	added := false
	for _, x := range rs {
		if !p.t.validCode(x[0], x[1]) {
			continue
		}
		p.ivs = append(p.ivs, interval{lo: x[0], hi: x[1], depth: int32(depth), node: idx})
		added = true
	}
	if !added {
		return -1, nil
	}
	if len(p.lu.nodes) >= maxUnitNodes || len(p.ivs) > 4*maxUnitNodes {
		return -1, fmt.Errorf("unit at 0x%x: more than %d functions and inlined calls", p.off, maxUnitNodes)
	}
	nd := node{parent: parent, callFile: -1}
	if e.Tag == dwarf.TagInlinedSubroutine {
		if cf, ok := e.Val(dwarf.AttrCallFile).(int64); ok && cf >= 0 && cf < int64(len(p.callFiles)) {
			nd.callFile = p.callFiles[cf]
		}
		if cl, ok := e.Val(dwarf.AttrCallLine).(int64); ok {
			nd.callLine = clampLine(cl)
		}
	}
	p.lu.nodes = append(p.lu.nodes, nd)
	di := p.info[e.Offset]
	if di == nil {
		di = infoOf(e)
	}
	p.own = append(p.own, di)
	return idx, nil
}

func clampLine(v int64) int32 {
	if v < 0 || v > 1<<31-1 {
		return 0
	}
	return int32(v)
}

// nameNodes names every node by following abstract origins and
// specifications, preferring a linkage name anywhere on the chain.
func (p *unitParser) nameNodes() error {
	for i := range p.lu.nodes {
		var name, linkage string
		var decl int64
		di := p.own[i]
		for hops := 0; di != nil && hops <= maxRefHops; hops++ {
			if linkage == "" {
				linkage = di.linkage
			}
			if name == "" {
				name = di.name
			}
			if decl == 0 {
				decl = di.declLine
			}
			if (linkage != "" && decl != 0) || di.ref == 0 {
				break
			}
			di = p.lookup(di.ref)
		}
		if linkage != "" {
			name = linkage
		}
		if s, ok := p.names[name]; ok {
			name = s
		} else {
			p.names[name] = name
		}
		p.lu.nodes[i].name = name
		p.lu.nodes[i].startLine = clampLine(decl)
	}
	return nil
}

// lookup returns the naming attributes of the entry at off, reading it if
// the walk did not record it (references into other units, or to entries
// the walk skipped).
func (p *unitParser) lookup(off dwarf.Offset) *dieInfo {
	if di, ok := p.info[off]; ok {
		return di
	}
	if p.seeker == nil {
		p.seeker = p.d.Reader()
	}
	p.seeker.Seek(off)
	e, err := p.seeker.Next()
	var di *dieInfo
	if err == nil && e != nil && e.Offset == off {
		di = infoOf(e)
	}
	p.info[off] = di
	return di
}

// flatten turns the nested intervals of a unit's functions into disjoint
// segments naming the deepest node at each address. Intervals that
// overlap without nesting are clipped to their enclosing interval.
func flatten(ivs []interval) []segment {
	sort.Slice(ivs, func(i, j int) bool {
		a, b := &ivs[i], &ivs[j]
		if a.lo != b.lo {
			return a.lo < b.lo
		}
		if a.hi != b.hi {
			return a.hi > b.hi
		}
		return a.depth < b.depth
	})
	segs := make([]segment, 0, len(ivs)+1)
	emit := func(lo uint64, node int32) {
		if n := len(segs); n > 0 {
			if segs[n-1].lo == lo {
				segs[n-1].node = node
				return
			}
			if segs[n-1].node == node {
				return
			}
		}
		segs = append(segs, segment{lo: lo, node: node})
	}
	var stack []interval
	pop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		next := int32(-1)
		if len(stack) > 0 {
			next = stack[len(stack)-1].node
		}
		emit(top.hi, next)
	}
	for _, iv := range ivs {
		for len(stack) > 0 && stack[len(stack)-1].hi <= iv.lo {
			pop()
		}
		if len(stack) > 0 {
			if top := stack[len(stack)-1]; iv.hi > top.hi {
				iv.hi = top.hi
			}
		}
		if iv.hi <= iv.lo {
			continue
		}
		emit(iv.lo, iv.node)
		stack = append(stack, iv)
	}
	for len(stack) > 0 {
		pop()
	}
	return segs
}
