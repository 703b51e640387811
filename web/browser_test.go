package web

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// chromiumPath finds the browser for TestBrowser: $SCORCH_CHROMIUM, else
// chromium on $PATH (testenv.RequireTool: missing, the test fails).
func chromiumPath(t *testing.T) string {
	if p := os.Getenv("SCORCH_CHROMIUM"); p != "" {
		return p
	}
	return testenv.RequireTool(t, "chromium")
}

// TestBrowser drives the page in headless Chromium for every fixture:
// select a range on the timeline by dragging, search for the hot
// function, click its frame to zoom, and check what the page shows. It
// saves a screenshot to $SCORCH_SCREENSHOTS (default: a temporary folder).
func TestBrowser(t *testing.T) {
	exe := chromiumPath(t)
	for _, fx := range loadFixtures(t) {
		t.Run(fx.File, func(t *testing.T) { browseFixture(t, exe, fx) })
	}
}

// page is one headless Chromium tab on a viewer server, with helpers that
// fail the test on error.
type page struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	jsErrors []string // uncaught exceptions and console.error calls
}

// openPage starts Chromium on a fresh profile directory and loads the
// viewer for src. Everything stops when the test ends.
func openPage(t *testing.T, exe string, src Source, title string) *page {
	srv := httptest.NewServer(NewHandler(src, Options{Title: title}))
	t.Cleanup(srv.Close)
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			p.pageErr(msg)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				p.pageErr(fmt.Sprintf("console.error with %d args", len(ev.Args)))
			}
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	p.do("loading the page", chromedp.Navigate(srv.URL+"/"))
	p.idle("first render", "scorchState.ready")
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.jsErrors) > 0 {
			t.Errorf("page errors: %q", p.jsErrors)
		}
	})
	return p
}

func (p *page) pageErr(msg string) {
	p.mu.Lock()
	p.jsErrors = append(p.jsErrors, msg)
	p.mu.Unlock()
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Fatalf("%s: %v (page errors: %q)", what, err, p.jsErrors)
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.fail(what, err)
	}
}

// idle waits until the page is not loading and the JavaScript cond holds.
func (p *page) idle(what string, cond string) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[bool](`window.scorchState && scorchState.loading === 0 && !!(`+cond+`)`,
		chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		p.fail("waiting for "+what, err)
	}
}

func evalJS[T any](p *page, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluating "+expr, err)
	}
	return v
}

func (p *page) int(expr string) int       { p.t.Helper(); return evalJS[int](p, expr) }
func (p *page) float(expr string) float64 { p.t.Helper(); return evalJS[float64](p, expr) }
func (p *page) string(expr string) string { p.t.Helper(); return evalJS[string](p, expr) }
func (p *page) bool(expr string) bool     { p.t.Helper(); return evalJS[bool](p, expr) }
func (p *page) gen() int                  { p.t.Helper(); return p.int(`scorchState.gen`) }
func (p *page) rect(expr string) (x, y, w, h float64) {
	p.t.Helper()
	return p.float(expr + `.x`), p.float(expr + `.y`), p.float(expr + `.w`), p.float(expr + `.h`)
}

// dragTimeline drags across the timeline from fraction f0 to f1 of its
// width and waits for the page to render the new selection.
func (p *page) dragTimeline(f0, f1 float64) {
	p.t.Helper()
	const box = `document.getElementById('timeline').getBoundingClientRect()`
	bx, by, bw, bh := p.float(box+`.left`), p.float(box+`.top`), p.float(box+`.width`), p.float(box+`.height`)
	gen := p.gen()
	y := by + bh/2
	x0, x1 := bx+f0*bw, bx+f1*bw
	p.do("dragging on the timeline",
		chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x0, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, (x0+x1)/2, y, chromedp.ButtonLeft),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x1, y, chromedp.ButtonLeft),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x1, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
	)
	p.idle("render after the drag", fmt.Sprintf("scorchState.gen > %d", gen))
}

// frameRGB returns the colour in the middle of the widest drawn frame
// named name.
func (p *page) frameRGB(name string) (r, g, b int) {
	p.t.Helper()
	expr := fmt.Sprintf(`(() => { const f = scorchState.frameRect(%q); if (!f) return ''; const c = document.getElementById('flamegraph'); const k = c.width / c.clientWidth; const b = c.getBoundingClientRect(); return Array.from(c.getContext('2d').getImageData(Math.round((f.x - b.left + f.w / 2) * k), Math.round((f.y - b.top + f.h / 2) * k), 1, 1).data).join(','); })()`, name)
	s := p.string(expr)
	if _, err := fmt.Sscanf(s, "%d,%d,%d", &r, &g, &b); err != nil {
		p.t.Fatalf("frame %s: no pixel (%q)", name, s)
	}
	return r, g, b
}

func browseFixture(t *testing.T, exe string, fx fixture) {
	src, err := FileSource(filepath.Join("testdata", fx.File))
	if err != nil {
		t.Fatal(err)
	}
	p := openPage(t, exe, src, "Scorch test: "+fx.File)
	if p.int(`scorchState.drawn`) < 2 {
		t.Fatal("nothing drawn")
	}

	// A file is one profile: no range to drag (TestBrowserSingleProfile
	// drags; TestBrowserURLState and TestBrowserLive drag a store's).
	p.idle("the timeline", `scorchState.single`)

	// The top table's first row is the hot function at its share.
	firstName := p.string(`document.querySelector('#top-table tbody tr').dataset.name`)
	selfShare := p.float(`+document.querySelector('#top-table tbody tr').dataset.selfShare`)
	if firstName != fx.Hot || math.Abs(selfShare-fx.SelfShare) > fx.Tolerance {
		t.Errorf("top row %q at %.2f%%, want %q at %.0f±%.0f%%", firstName, selfShare, fx.Hot, fx.SelfShare, fx.Tolerance)
	}

	// Search highlights the hot function and reports its share.
	gen := p.gen()
	p.do("typing the search", chromedp.SendKeys(chromedp.ID("search"), fx.Search))
	p.idle("search applied", fmt.Sprintf("scorchState.gen > %d && scorchState.search.query === %q", gen, fx.Search))
	share := p.float(`scorchState.search.share`)
	matches := p.int(`scorchState.search.matches`)
	want := fx.TotalShare
	if want == 0 {
		want = fx.SelfShare
	}
	if matches < 1 || math.Abs(100*share-want) > fx.Tolerance {
		t.Errorf("search %q: share %.2f%% in %d functions, want %.0f±%.0f%%", fx.Search, 100*share, matches, want, fx.Tolerance)
	}
	if shown := p.string(`document.getElementById('search-share').textContent`); !strings.Contains(shown, fmt.Sprintf("%.1f%%", 100*share)) {
		t.Errorf("search share text %q does not show %.1f%%", shown, 100*share)
	}
	if r, g, b := p.frameRGB(fx.Hot); !(r > 180 && b > 180 && g < 120) {
		t.Errorf("matched frame %s is rgb(%d,%d,%d), want the magenta highlight", fx.Hot, r, g, b)
	}

	// The screenshot shows the search over the whole selection.
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.fail("screenshot", err)
	}
	// Screenshots go to $SCORCH_SCREENSHOTS (docs/screenshots to refresh
	// the README's) or a temporary folder, never over committed files.
	dir := os.Getenv("SCORCH_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, strings.TrimSuffix(fx.File, ".pb.gz")+".png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("screenshot: %s", name)

	// Click the hot function's frame to zoom into it.
	rect := fmt.Sprintf(`scorchState.frameRect(%q)`, fx.Hot)
	if p.string(`JSON.stringify(`+rect+`)`) == "null" {
		t.Fatalf("no frame of %s drawn", fx.Hot)
	}
	x, y, w, h := p.rect(rect)
	gen = p.gen()
	p.do("clicking the frame", chromedp.MouseClickXY(x+w/2, y+h/2))
	p.idle("zoom", fmt.Sprintf("scorchState.gen > %d", gen))
	zoomName := p.string(`scorchState.zoom.name`)
	zoomShare := p.float(`scorchState.zoom.share`)
	crumb := p.string(`document.querySelector('#breadcrumb span:last-child').textContent`)
	if zoomName != fx.Hot || crumb != fx.Hot || math.Abs(100*zoomShare-want) > fx.Tolerance {
		t.Errorf("zoomed to %q (breadcrumb %q) at %.2f%%, want %q at %.0f%%", zoomName, crumb, 100*zoomShare, fx.Hot, want)
	}
	// The zoomed frame now spans the graph.
	if _, _, zw, _ := p.rect(rect); math.Abs(zw-p.float(`document.getElementById('flamegraph').clientWidth`)) > 2 {
		t.Errorf("zoomed frame is %.0fpx wide, want the full width", zw)
	}

	// Reset goes back to the root.
	p.do("reset", chromedp.Click(chromedp.ID("reset")))
	p.idle("reset", `scorchState.zoom.name === 'all'`)
}

// TestBrowserDiff selects two ranges in diff mode and checks the colours:
// a function only in B is red, one only in A blue.
func TestBrowserDiff(t *testing.T) {
	exe := chromiumPath(t)
	p := openPage(t, exe, testSource(), "Scorch diff test")
	gen := p.gen()
	p.do("diff mode", chromedp.Click(chromedp.ID("mode-diff")))
	p.idle("diff mode", fmt.Sprintf("scorchState.gen >= %d && scorchState.mode === 'diff'", gen))
	// The timeline spans w1, w2, w3 (10s each): A over w1, B over w2.
	p.dragTimeline(0.05, 0.25)
	p.dragTimeline(0.40, 0.60)
	p.idle("diff", "scorchState.diff.totals")
	if got := p.string(`scorchState.diff.totals.join(',')`); got != "10,10" {
		t.Fatalf("diff totals %s, want 10,10", got)
	}
	if r, _, b := p.frameRGB("encode"); r <= b+40 {
		t.Errorf("encode (only in B) is rgb(%d,_,%d), want red", r, b)
	}
	if r, _, b := p.frameRGB("idle"); b <= r+40 {
		t.Errorf("idle (only in A) is rgb(%d,_,%d), want blue", r, b)
	}
	if dir := os.Getenv("SCORCH_SCREENSHOTS"); dir != "" {
		png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			p.fail("screenshot", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "diff.png"), png, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// TestBrowserKinds checks the colour classes the page gets from the server:
// a user frame is drawn orange, a JIT frame green, a kernel frame blue, and
// the top table labels each row with its class.
func TestBrowserKinds(t *testing.T) {
	exe := chromiumPath(t)
	m := &memSource{}
	m.add("w", t0, 10*time.Second, nil, []stack{
		{frames: []string{"main", "j:JS:*hot"}, v: 5},
		{frames: []string{"main", "j:JS:*hot", "k:sys_read"}, v: 5},
	})
	p := openPage(t, exe, m, "Scorch kinds test")
	for _, tt := range []struct {
		name, kind string
		ok         func(r, g, b int) bool
	}{
		{"main", "user", func(r, g, b int) bool { return r > g && g > b }},
		{"JS:*hot", "jit", func(r, g, b int) bool { return g > r && g > b }},
		{"sys_read", "kernel", func(r, g, b int) bool { return b > g && g > r }},
	} {
		if r, g, b := p.frameRGB(tt.name); !tt.ok(r, g, b) {
			t.Errorf("%s is drawn rgb(%d,%d,%d), not in the %s colours", tt.name, r, g, b, tt.kind)
		}
		sel := fmt.Sprintf(`document.querySelector('#top-table tbody tr[data-name=%q] .kind').textContent`, tt.name)
		if got := p.string(sel); got != tt.kind {
			t.Errorf("top table: %s labelled %q, want %q", tt.name, got, tt.kind)
		}
	}
}

// TestBrowserLarge renders a tree of 50,000 distinct functions and reports
// how long the page took; sub-pixel frames must be skipped.
func TestBrowserLarge(t *testing.T) {
	exe := chromiumPath(t)
	m := &memSource{}
	m.profs = map[string]*profile.Profile{"big": bigProfile(50_000, 100_000)}
	m.windows = []Window{{ID: "big", Start: t0, Duration: time.Minute, Samples: 300_000}}
	p := openPage(t, exe, m, "Scorch large test")
	nodes, drawn := p.int(`scorchState.nodes`), p.int(`scorchState.drawn`)
	if drawn < 100 || drawn >= nodes {
		t.Errorf("drew %d of %d nodes: want sub-pixel frames skipped", drawn, nodes)
	}
	loadMs, drawMs := p.float(`scorchState.loadMs`), p.float(`scorchState.drawMs`)
	if p.int(`scorchState.pruned`) == 0 {
		t.Errorf("a tree of %d nodes was sent whole: want nodes narrower than a pixel at 8x zoom left out", nodes)
	}
	// The search totals the whole selection, not the nodes sent: the
	// page asks the server, whose answer is checked in TestSearchPruned.
	var want struct {
		Total, Matched [2]int64
		Functions      int
	}
	getJSON(t, NewHandler(m, Options{}), "/api/search?text=pkg7.", &want)
	p.do("search", chromedp.SendKeys(chromedp.ID("search"), "pkg7."))
	p.idle("search", `scorchState.search.matches > 0`)
	if got := p.int(`scorchState.search.matches`); got != want.Functions || want.Functions < 400 {
		t.Errorf("search pkg7. matched %d functions, want %d (about 50000/97)", got, want.Functions)
	}
	if got, w := p.float(`scorchState.search.share`), float64(want.Matched[0])/float64(want.Total[0]); math.Abs(got-w) > 1e-9 {
		t.Errorf("search pkg7.: share %.4f, want %.4f", got, w)
	}
	t.Logf("%d nodes: fetch+parse %.0fms, draw %.1fms (%d frames drawn); search redraw %.1fms",
		nodes, loadMs, drawMs, drawn, p.float(`scorchState.drawMs`))
}

// TestBrowserErrorOnTop: an error the API answers is shown in the banner
// under the header, above the flame graph, where the user looks; the next
// good answer clears it.
func TestBrowserErrorOnTop(t *testing.T) {
	exe := chromiumPath(t)
	m := &memSource{}
	m.add("w", t0, 10*time.Second, map[string]string{"service_name": "api"}, []stack{{frames: []string{"main", "hot"}, v: 5}})
	p := openPage(t, exe, m, "Scorch error test")
	if !p.bool(`document.getElementById('error').hidden`) {
		t.Errorf("error banner shown before any error")
	}
	change := `(() => { const s = document.getElementById('f-service'); s.value = %q; s.dispatchEvent(new Event('change')); return true; })()`
	m.fail.Store(true)
	p.bool(fmt.Sprintf(change, "api"))
	p.idle("the failed request", `scorchState.error !== ''`)
	text := p.string(`document.getElementById('error').textContent`)
	if p.bool(`document.getElementById('error').hidden`) || !strings.Contains(text, "store unreadable") {
		t.Errorf("banner hidden or without the error: %q", text)
	}
	bannerTop, flameTop := p.float(`document.getElementById('error').getBoundingClientRect().top`), p.float(`document.getElementById('flamegraph').getBoundingClientRect().top`)
	if bannerTop >= flameTop || bannerTop > 200 {
		t.Errorf("banner at y=%.0f, flame graph at y=%.0f: want the banner at the top", bannerTop, flameTop)
	}
	m.fail.Store(false)
	p.bool(fmt.Sprintf(change, ""))
	p.idle("the banner cleared by a good answer", `document.getElementById('error').hidden`)
}

// TestBrowserFilterLists picks filters in the page: each other list is
// narrowed to what the choice leaves, with sample counts, the chosen
// value stays selected, and the flame graph counts what is chosen.
func TestBrowserFilterLists(t *testing.T) {
	exe := chromiumPath(t)
	p := openPage(t, exe, testSource(), "Scorch filter test")
	p.idle("the filter lists", `scorchState.labelsGen > 0`)
	options := func(id string) string {
		return p.string(`Array.from(document.getElementById('` + id + `').options).map((o) => o.text).join('|')`)
	}
	if got := options("f-pid"); got != "all (3)|10 — 20 samples|77 — 4 samples|78 — 1 samples" {
		t.Errorf("pid list: %s", got)
	}
	choose := func(id, v string) {
		gen, lg := p.gen(), p.int(`scorchState.labelsGen`)
		p.bool(fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change')); return true; })()`, id, v))
		p.idle("the render after choosing "+v, fmt.Sprintf(`scorchState.gen > %d && scorchState.labelsGen > %d`, gen, lg))
	}
	values := func(id string) string {
		return p.string(`Array.from(document.getElementById('` + id + `').options).slice(1).map((o) => o.value).sort().join(',')`)
	}
	if got := values("f-pid"); got != "10,77,78" {
		t.Errorf("pid list before any filter: %s", got)
	}
	choose("f-service", "db")
	if got := values("f-pid"); got != "77,78" {
		t.Errorf("pid list with service db: %s, want 77,78", got)
	}
	if got := values("f-service"); got != "api,db" {
		t.Errorf("service list with service db: %s, want api,db (not narrowed by itself)", got)
	}
	if got := options("f-comm"); !strings.Contains(got, "postgres — 4 samples") {
		t.Errorf("comm list with service db: %s, want postgres with 4 samples", got)
	}
	if total := p.int(`scorchState.total`); total != 5 {
		t.Errorf("flame graph total with service db: %d, want 5", total)
	}
	choose("f-pid", "77")
	if got := values("f-comm"); got != "postgres" {
		t.Errorf("comm list with pid 77: %s, want postgres", got)
	}
	if got := p.string(`document.getElementById('f-service').value`); got != "db" {
		t.Errorf("service choice lost: %q", got)
	}
	if total := p.int(`scorchState.total`); total != 4 {
		t.Errorf("flame graph total with pid 77: %d, want 4", total)
	}
}

// TestBrowserURLState sets a range, a filter and a search, reloads the
// page from its address, and checks that the same view comes back.
func TestBrowserURLState(t *testing.T) {
	exe := chromiumPath(t)
	p := openPage(t, exe, testSource(), "Scorch URL test")
	// The lists are filled after the first render: a value not listed yet
	// cannot be chosen.
	p.idle("the filter lists", `scorchState.labelsGen > 0`)
	gen := p.gen()
	p.bool(`(() => { const s = document.getElementById('f-service'); s.value = 'api'; s.dispatchEvent(new Event('change')); return true; })()`)
	p.idle("the render after choosing api", fmt.Sprintf(`scorchState.gen > %d`, gen))
	p.dragTimeline(0.05, 0.6)
	gen = p.gen()
	p.bool(`(() => { const s = document.getElementById('search'); s.value = 'parse'; s.dispatchEvent(new Event('input')); return true; })()`)
	p.idle("the search", fmt.Sprintf(`scorchState.gen > %d`, gen))
	want := struct {
		sel           string
		total, search float64
	}{p.string(`JSON.stringify({from: Math.floor(scorchState.selection.from), to: Math.ceil(scorchState.selection.to)})`), p.float(`scorchState.total`), p.float(`scorchState.search.share`)}
	hash := p.string(`location.hash`)
	for _, s := range []string{"service=api", "q=parse", "from=", "to="} {
		if !strings.Contains(hash, s) {
			t.Errorf("address fragment %q lacks %s", hash, s)
		}
	}
	p.do("reloading", chromedp.Reload())
	p.idle("the render after the reload", `scorchState.ready && scorchState.labelsGen > 0 && scorchState.search.share > 0`)
	if got := p.string(`JSON.stringify(scorchState.selection)`); got != want.sel {
		t.Errorf("range after reload %s, want %s (whole milliseconds)", got, want.sel)
	}
	if got := p.string(`document.getElementById('f-service').value`); got != "api" {
		t.Errorf("service filter after reload %q, want api", got)
	}
	if got := p.string(`document.getElementById('search').value`); got != "parse" {
		t.Errorf("search after reload %q, want parse", got)
	}
	if total, share := p.float(`scorchState.total`), p.float(`scorchState.search.share`); total != want.total || share != want.search {
		t.Errorf("after reload: total %v, search share %v; want %v, %v", total, share, want.total, want.search)
	}
}

// clickFrame clicks the middle of the widest drawn frame named name (with
// opts, e.g. a modifier) and waits for the next render.
func (p *page) clickFrame(name string, opts ...chromedp.MouseOption) {
	p.t.Helper()
	if !p.bool(fmt.Sprintf(`!!scorchState.frameRect(%q)`, name)) {
		p.t.Fatalf("frame %s is not drawn", name)
	}
	x, y, w, h := p.rect(fmt.Sprintf(`scorchState.frameRect(%q)`, name))
	gen := p.gen()
	p.do("clicking "+name, chromedp.MouseClickXY(x+w/2, y+h/2, opts...))
	p.idle("the render after clicking "+name, fmt.Sprintf(`scorchState.gen > %d`, gen))
}

// choose sets the select id to v as a user would and waits for the render.
func (p *page) choose(id, v string) {
	p.t.Helper()
	gen := p.gen()
	p.bool(fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change')); return s.value === %q; })()`, id, v, v))
	p.idle("the render after choosing "+v, fmt.Sprintf(`scorchState.gen > %d`, gen))
}

// frameY is the top of the widest drawn frame named name.
func (p *page) frameY(name string) float64 {
	p.t.Helper()
	if !p.bool(fmt.Sprintf(`!!scorchState.frameRect(%q)`, name)) {
		p.t.Fatalf("frame %s is not drawn", name)
	}
	return p.float(fmt.Sprintf(`scorchState.frameRect(%q).y`, name))
}

// TestBrowserGroupBy groups the flame graph by service from the page: one
// frame per service under the root, as wide as its samples, kept across a
// reload.
func TestBrowserGroupBy(t *testing.T) {
	exe := chromiumPath(t)
	p := openPage(t, exe, testSource(), "Scorch group test")
	p.choose("group", "service")
	for name, want := range map[string]float64{"service: api": 20.0 / 25, "service: db": 5.0 / 25} {
		_, y, w, _ := p.rect(fmt.Sprintf(`scorchState.frameRect(%q)`, name))
		full := p.float(`document.getElementById('flamegraph').clientWidth`)
		if got := w / full; got < want-0.01 || got > want+0.01 {
			t.Errorf("%s: %.3f of the width, want %.3f", name, got, want)
		}
		if main := p.frameY("main"); y >= main {
			t.Errorf("%s at y %v, not above main (%v): the groups are the root's children", name, y, main)
		}
	}
	if rows := p.string(`Array.from(document.querySelectorAll('#top-table tbody tr')).map((r) => r.dataset.name).join('|')`); strings.Contains(rows, "service: ") {
		t.Errorf("top table lists group frames: %s", rows)
	}
	if hash := p.string(`location.hash`); !strings.Contains(hash, "group=service") {
		t.Errorf("address fragment %q lacks group=service", hash)
	}
	p.do("reloading", chromedp.Reload())
	p.idle("the render after the reload", `scorchState.ready`)
	if got := p.string(`document.getElementById('group').value`); got != "service" {
		t.Errorf("group after reload %q, want service", got)
	}
	p.frameY("service: db")
	p.choose("group", "comm")
	p.frameY("process: postgres")
	p.frameY("process: (none)")
}

// TestBrowserSandwich opens the callers and callees of a function from the
// top table, moves to another by clicking it, and from the flame graph
// with shift+click; the layout puts callers above, callees below.
func TestBrowserSandwich(t *testing.T) {
	exe := chromiumPath(t)
	p := openPage(t, exe, testSource(), "Scorch sandwich test")
	gen := p.gen()
	p.do("the parse row's callers/callees button", chromedp.Click(chromedp.CSS(`#top-table tr[data-name="parse"] button.sw`)))
	p.idle("the sandwich of parse", fmt.Sprintf(`scorchState.gen > %d && scorchState.mode === 'sandwich'`, gen))
	// parse (7 of 25) is called by serve, called by main.
	if main, serve, parse := p.frameY("main"), p.frameY("serve"), p.frameY("parse"); !(main < serve && serve < parse) {
		t.Errorf("callers of parse: main at %v, serve at %v, parse at %v; want main above serve above parse", main, serve, parse)
	}
	if got := p.float(`scorchState.sandwich.total`); got != 7 {
		t.Errorf("parse in the sandwich: %v samples, want 7", got)
	}
	if p.bool(`!!scorchState.frameRect('encode')`) {
		t.Errorf("encode drawn in parse's sandwich: it neither calls nor is called by parse")
	}
	// Clicking serve centres on serve: main above, its callees below.
	p.clickFrame("serve")
	if got := p.string(`scorchState.sandwich.fn`); got != "serve" {
		t.Fatalf("after clicking serve the sandwich is of %q", got)
	}
	serve := p.frameY("serve")
	for _, callee := range []string{"parse", "encode", "sys_read"} {
		if y := p.frameY(callee); y <= serve {
			t.Errorf("callee %s at y %v, not below serve (%v)", callee, y, serve)
		}
	}
	if main := p.frameY("main"); main >= serve {
		t.Errorf("caller main at y %v, not above serve (%v)", main, serve)
	}
	if got := p.float(`scorchState.sandwich.total`); got != 18 {
		t.Errorf("serve in the sandwich: %v samples, want 18", got)
	}
	hash := p.string(`location.hash`)
	if !strings.Contains(hash, "mode=sandwich") || !strings.Contains(hash, "fn=serve") {
		t.Errorf("address fragment %q lacks mode=sandwich and fn=serve", hash)
	}
	p.do("reloading", chromedp.Reload())
	p.idle("the render after the reload", `scorchState.ready && scorchState.mode === 'sandwich'`)
	if got := p.float(`scorchState.sandwich.total`); got != 18 {
		t.Errorf("after reload: serve's sandwich has %v samples, want 18", got)
	}
	// From the flame graph: shift+click on query.
	gen = p.gen()
	p.do("flame graph mode", chromedp.Click(chromedp.ID("mode-flame")))
	p.idle("the flame graph", fmt.Sprintf(`scorchState.gen > %d && scorchState.mode === 'flame'`, gen))
	p.clickFrame("query", chromedp.ButtonModifiers(chromedp.ModifierShift))
	p.idle("the sandwich of query", `scorchState.mode === 'sandwich' && scorchState.sandwich.fn === 'query' && scorchState.sandwich.total === 4`)
}

// TestBrowserLive follows the last 5 minutes: the selection ends at now
// and moves with every refresh, holds the windows of those minutes only,
// is kept in the address as live=5 (not as a fixed range), and a drag on
// the timeline ends it.
func TestBrowserLive(t *testing.T) {
	exe := chromiumPath(t)
	now := time.Now()
	m := &memSource{}
	for i := range 20 { // the last 20 minutes, one window a minute
		start := now.Add(-time.Duration(20-i) * time.Minute)
		m.add(fmt.Sprint("w", i), start, time.Minute, map[string]string{"service_name": "svc"}, []stack{
			{frames: []string{"main", "work"}, v: int64(i + 1)},
		})
	}
	p := openPage(t, exe, m, "Scorch live test")
	p.bool(`(scorchState.liveEvery = 500, true)`)
	p.choose("live", "5")
	p.idle("two refreshes", `scorchState.liveTicks >= 2`)
	p.idle("a render after them", `scorchState.ready`)
	sel := p.string(`JSON.stringify(scorchState.selection)`)
	var s struct{ From, To float64 }
	if err := json.Unmarshal([]byte(sel), &s); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.UnixMilli(int64(s.To))); d < 0 || d > 30*time.Second {
		t.Errorf("live selection ends %v before now, want at most one refresh", d)
	}
	if span := s.To - s.From; span != 5*60*1000 {
		t.Errorf("live selection spans %v ms, want 5 minutes", span)
	}
	// Windows overlapping the last 5 minutes: the last 5 or 6 (i = 14..19).
	if total := p.int(`scorchState.total`); total != 15+16+17+18+19+20 && total != 16+17+18+19+20 {
		t.Errorf("live total %d, want the last 5 or 6 windows' (%d or %d)", total, 16+17+18+19+20, 15+16+17+18+19+20)
	}
	to0 := s.To
	p.idle("a later refresh", fmt.Sprintf(`scorchState.selection.to > %v`, to0))
	hash := p.string(`location.hash`)
	if !strings.Contains(hash, "live=5") || strings.Contains(hash, "from=") {
		t.Errorf("address fragment %q: want live=5 and no fixed range", hash)
	}
	if label := p.string(`document.getElementById('range-label').textContent`); !strings.Contains(label, "last 5 minutes") {
		t.Errorf("range label %q", label)
	}
	p.dragTimeline(0.1, 0.3)
	if live := p.int(`scorchState.live`); live != 0 {
		t.Errorf("after a drag live is %d, want off", live)
	}
	if got := p.string(`document.getElementById('live').value`); got != "" {
		t.Errorf("live list shows %q after a drag", got)
	}
}

// TestBrowserSingleProfile: a file of one profile (scorch view) has no
// range to drag: the timeline says so, the hint is hidden and a drag
// changes nothing; words are the user's ("samples", not "samples/count"
// or "windows").
func TestBrowserSingleProfile(t *testing.T) {
	exe := chromiumPath(t)
	src, err := FileSource(filepath.Join("testdata", "cpusplit.pb.gz"))
	if err != nil {
		t.Fatal(err)
	}
	p := openPage(t, exe, src, "Scorch file test")
	p.idle("the timeline", `scorchState.single`)
	if !p.bool(`document.getElementById('tl-hint').hidden`) {
		t.Errorf("the drag hint is shown for a single profile")
	}
	status := p.string(`document.getElementById('status').textContent`)
	if strings.Contains(status, "samples/count") || strings.Contains(status, "window") || !strings.Contains(status, "samples") {
		t.Errorf("status %q: want samples, without samples/count or windows", status)
	}
	const box = `document.getElementById('timeline').getBoundingClientRect()`
	bx, by, bw, bh := p.float(box+`.left`), p.float(box+`.top`), p.float(box+`.width`), p.float(box+`.height`)
	gen := p.gen()
	y := by + bh/2
	p.do("dragging on the timeline",
		chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, bx+0.2*bw, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, bx+0.6*bw, y, chromedp.ButtonLeft),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, bx+0.6*bw, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
	)
	time.Sleep(300 * time.Millisecond)
	if g := p.gen(); g != gen || p.bool(`scorchState.selection !== null`) {
		t.Errorf("a drag on a single profile changed the view (gen %d -> %d, selection %s)", gen, g, p.string(`JSON.stringify(scorchState.selection)`))
	}
}
