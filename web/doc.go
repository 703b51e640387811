// Package web serves Scorch's local profile viewer: one page and a small
// JSON API over a [Source] of stored profiles, so that a host running the
// agent (or anyone with a pprof file, via [FileSource]) can look at a flame
// graph without a Pyroscope or Parca server.
//
// # Model
//
// A Source holds windows: one pprof profile per target per time window,
// with window labels (service_name, container_id, pid, ...). A request
// selects a time range and label filters. Every window that overlaps the
// range is merged whole: windows are the unit of time, so the span actually
// merged (reported as from/to in responses) can be wider than the range
// asked for. Filters apply to window labels first; a filter whose label a
// window does not carry applies to each sample's labels instead (string
// labels, then numeric ones), which is how comm and pid filter inside a
// single pprof file. Profiles are decoded once and kept in a bounded LRU
// cache ([Options].CacheProfiles, [Options].CacheBytes). Responses are merged trees and tables,
// never raw samples.
//
// The value shown is the "samples" sample type when a profile has one, else
// its default sample type, else its first.
//
// Frames are named by function, with inlined functions expanded (outermost
// first); a location without symbols is named "file+0xOFFSET" from its
// mapping, or by its address. Each frame has a kind, used for colour:
// "kernel", "jit" or "user", decided by exporter.FrameKind from the
// location's mapping file, in the convention the exporter writes
// ("[kernel.kallsyms]" and modules kernel, "[jit]" JIT, "[vdso]" and file
// paths user; perf's "//anon" and perf-PID.map read as JIT too). The server
// decides it; the page only maps the class to a colour.
//
// # API
//
// All endpoints are GET and share these parameters:
//
//	from, to   range [from, to): Unix milliseconds or RFC 3339; default all time
//	service    window/sample label service_name (repeat for any of several)
//	container  label container_id
//	comm       label comm (process name)
//	pid        label pid (decimal)
//	q          keep only stacks with a frame whose name contains q (any case)
//	group      service, container, comm or pid: the trees of flamegraph,
//	           diff, top, search and sandwich get one frame per value of
//	           that label under the root ("service: api"; "(none)" for
//	           samples without it), of kind "group", left out of top
//
// Bad parameters get 400 with a plain-text message. A selection of more
// than [Options].FewWindows windows is read from the finest level of
// rollups of a [LeveledSource] with few, else the finest whose windows fit
// [Options].MaxWindows (the responses of flamegraph,
// top and diff give its period in ms as "resolution", 0 for the windows
// as recorded, and their from and to are widened to its periods); only
// one that no level fits, or a Source without rollups, gets 400.
//
//	/api/info
//		{"title"}
//	/api/timeline?step=
//		Samples per time bucket, for the timeline. step is milliseconds
//		or a Go duration; by default a round step giving at most 120
//		buckets. Without from/to the range is the extent of all windows.
//		Unfiltered counts come from window metadata (Window.Samples,
//		spread evenly over the window); sample-label filters open the
//		profiles. {"from","to","step" (ms),"windows","counts":[float]}
//	/api/flamegraph?minwidth=&maxnodes=
//		The merged call tree. {"windows","from","to","total","nodes",
//		"pruned","unit","kinds":["user","kernel","jit","group"],"names":[...],
//		"frame_kinds":[...],"root":NODE}, NODE = {"f": index into names
//		and frame_kinds (-1 for the root), "s": self, "t": total,
//		"c": [NODE...] sorted by name}. With minwidth (a fraction of the
//		root's total, 0 <= minwidth < 1) only nodes at least that wide
//		are sent; with maxnodes, at most the maxnodes of those with the
//		largest totals. "pruned" counts the nodes left out, so a node's
//		children may sum to less than its total. "names" holds the
//		names of the nodes sent only.
//	/api/diff?a_from&a_to&b_from&b_to&minwidth=&maxnodes=
//		One tree over two ranges (the filters and q apply to both):
//		like /api/flamegraph but "s" and "t" are [a, b] pairs, and
//		"a"/"b" hold each range's {"windows","from","to","total"}; a
//		node is wide enough when it is in either range.
//	/api/search?text= (with a selection, or a diff's two ranges)
//		The samples whose stack holds a function whose name contains
//		text (case-insensitive), each counted once, over the whole
//		tree (a pruned flame graph cannot total them):
//		{"total":[a,b],"matched":[a,b],"functions"}; b is 0 outside a
//		diff.
//	/api/sandwich?fn=&minwidth=&maxnodes=
//		The callers and the callees of the function named fn:
//		{"fn","found","windows","from","to","total","unit",
//		"callers":TREE,"callees":TREE}, TREE a /api/flamegraph body
//		whose root has one child, fn, with fn's total. In callers, a
//		node's children are its callers (to the roots of the stacks);
//		in callees, what it calls. A stack holding fn more than once
//		counts once, from its outermost fn. minwidth is a fraction of
//		fn's total; each side gets half of maxnodes.
//	/api/top?sort=self|total|name&limit=500
//		Per function: {"unit","windows","from","to","total","rows":[{"name",
//		"kind","self","total"}]}; total counts a sample once however often
//		the function recurs in it.
//	/api/labels
//		Per filter, the values in the range that the other filters leave
//		(a list is narrowed by the others, not by its own filter), and
//		the samples of each where they are known exactly (a value listed
//		from Window.Values of a window not opened has none):
//		{"service":[],"container":[],"comm":[],"pid":[],
//		"counts":{"service":{"api":123},...},"partial":{"pid":true}}.
//		A list is partial when the range holds more values than are
//		worth listing (at most 2000, those with the most samples) or
//		more windows whose values the source did not store (too many
//		in one window) than are opened for it (the 16 newest).
//	/api/profile.pb.gz
//		The selection merged into one gzipped pprof profile with the shown
//		sample type only; window labels are added to every sample as
//		string labels. 404 when nothing is selected.
//
// The page at "/" (vanilla JavaScript, embedded) draws the timeline, a
// canvas flame graph with the root at the top, the diff, the sandwich
// (callers above a function, callees below) and the top table from these
// endpoints. Its view (range or live span, filters, grouping, mode,
// function, search) is kept in the address's fragment; live mode moves
// the range up to now every 10 s; a source of one window (a file) has no
// range to drag and the timeline says so. It uses relative URLs, so the handler can be
// mounted under a prefix with [net/http.StripPrefix]. Its state is exposed
// as window.scorchState for tests.
package web
