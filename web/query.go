package web

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The label filters the API accepts, by query parameter, and the label key
// each one matches in window labels and then in sample labels.
var filterKeys = []struct{ param, label string }{
	{"service", "service_name"},
	{"container", "container_id"},
	{"comm", "comm"},
	{"pid", "pid"},
}

// allFrom and allTo bound the range used when a request names none.
var (
	allFrom = time.Unix(0, 0)
	allTo   = time.Unix(1<<32, 0) // year 2106
)

// badRequest is an error caused by the request's parameters.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error {
	return &badRequest{fmt.Sprintf(format, args...)}
}

// filter selects samples whose label key has one of values.
type filter struct {
	key    string
	values []string
	nums   []int64 // values as integers, for numeric sample labels
}

// query is a parsed selection: a time range, label filters and a focus
// substring.
type query struct {
	from, to time.Time
	explicit bool // from or to were given
	filters  []filter
	focus    string // lower-cased; keep stacks with a frame containing it
	group    string // label key whose values become the root's children; "" for none
}

// parseTime accepts Unix milliseconds or RFC 3339.
func parseTime(v url.Values, name string) (time.Time, bool, error) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, false, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), true, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false, badf("parameter %s=%q: want Unix milliseconds or RFC 3339 time", name, s)
	}
	return t, true, nil
}

// parseDuration accepts milliseconds or a Go duration ("10s").
func parseDuration(v url.Values, name string) (time.Duration, error) {
	s := v.Get(name)
	if s == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms <= 0 {
			return 0, badf("parameter %s=%q: must be positive", name, s)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, badf("parameter %s=%q: want positive milliseconds or a duration like 10s", name, s)
	}
	return d, nil
}

// parseCount reads a positive integer parameter, def when absent.
func parseCount(v url.Values, name string, def int) (int, error) {
	s := v.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, badf("parameter %s=%q: want a positive integer", name, s)
	}
	return n, nil
}

// parseFraction reads a number in [0, 1) (0 when absent).
func parseFraction(v url.Values, name string) (float64, error) {
	s := v.Get(name)
	if s == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0 && f < 1) {
		return 0, badf("parameter %s=%q: want a fraction of the total, at least 0 and less than 1", name, s)
	}
	return f, nil
}

// parsePruning reads how a tree is sent pruned: maxnodes (0 when absent:
// no bound) and minwidth (see parseFraction).
func parsePruning(v url.Values) (maxNodes int, minFrac float64, err error) {
	if maxNodes, err = parseCount(v, "maxnodes", 0); err != nil {
		return 0, 0, err
	}
	if minFrac, err = parseFraction(v, "minwidth"); err != nil {
		return 0, 0, err
	}
	return maxNodes, minFrac, nil
}

// parseQuery reads the range parameters prefix+"from" and prefix+"to",
// the label filters and q.
func parseQuery(v url.Values, prefix string) (query, error) {
	var q query
	from, okf, err := parseTime(v, prefix+"from")
	if err != nil {
		return q, err
	}
	to, okt, err := parseTime(v, prefix+"to")
	if err != nil {
		return q, err
	}
	q.from, q.to, q.explicit = allFrom, allTo, okf || okt
	if okf {
		q.from = from
	}
	if okt {
		q.to = to
	}
	if !q.to.After(q.from) {
		return q, badf("empty range: %sto (%s) is not after %sfrom (%s)", prefix, q.to.Format(time.RFC3339Nano), prefix, q.from.Format(time.RFC3339Nano))
	}
	for _, fk := range filterKeys {
		var vals []string
		for _, s := range v[fk.param] {
			if s != "" {
				vals = append(vals, s)
			}
		}
		if len(vals) == 0 {
			continue
		}
		f := filter{key: fk.label, values: vals}
		if fk.param == "pid" {
			for _, s := range vals {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil || n < 0 {
					return q, badf("parameter pid=%q: want a process id", s)
				}
				f.nums = append(f.nums, n)
			}
		}
		q.filters = append(q.filters, f)
	}
	q.focus = strings.ToLower(v.Get("q"))
	if g := v.Get("group"); g != "" {
		i := slices.IndexFunc(filterKeys, func(fk struct{ param, label string }) bool { return fk.param == g })
		if i < 0 {
			return q, badf("parameter group=%q: want service, container, comm or pid", g)
		}
		q.group = filterKeys[i].label
	}
	return q, nil
}

// windowFilters splits the filters for window w: it returns false if a
// window label rules the whole window out, else the filters that must be
// checked per sample because w does not carry their label. A filter of a
// sample label whose values the window lists (Window.Values) rules it out
// when none of them is wanted, without opening its profile.
func (q *query) windowFilters(w Window) (bool, []filter) {
	var rest []filter
	for _, f := range q.filters {
		ok, perSample := f.onWindow(&w)
		if !ok {
			return false, nil
		}
		if perSample {
			rest = append(rest, f)
		}
	}
	return true, rest
}

// windowPasses is the first result of windowFilters, without allocating.
func (q *query) windowPasses(w *Window) bool {
	for _, f := range q.filters {
		if ok, _ := f.onWindow(w); !ok {
			return false
		}
	}
	return true
}

// onWindow applies f to window w: ok is false if w's label, or the values
// it lists of a sample label, rule the window out; perSample says f must
// still be checked per sample (w does not carry its label).
func (f *filter) onWindow(w *Window) (ok, perSample bool) {
	if v, has := w.Labels[f.key]; has {
		return contains(f.values, v), false
	}
	if vs, known := w.valuesOf(f.key); known && !slices.ContainsFunc(vs, func(v string) bool { return contains(f.values, v) }) {
		return false, false
	}
	return true, true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// matchSample reports whether s passes every filter, looking at its string
// labels and then its numeric labels.
func matchSample(s sampleLabels, fs []filter) bool {
	for _, f := range fs {
		if !matchOne(s, f) {
			return false
		}
	}
	return true
}

func matchOne(s sampleLabels, f filter) bool {
	for _, l := range s {
		switch {
		case l.key != f.key:
		case !l.isNum:
			if contains(f.values, l.str) {
				return true
			}
		case f.nums != nil:
			if slices.Contains(f.nums, l.num) {
				return true
			}
		case contains(f.values, strconv.FormatInt(l.num, 10)):
			return true
		}
	}
	return false
}
