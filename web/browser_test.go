package web

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds the browser for TestBrowser: $SCORCH_CHROMIUM, else
// chromium on $PATH. Without one the test skips, except in CI (CI=true),
// where it fails: the page must be tested there.
func chromiumPath(t *testing.T) string {
	if p := os.Getenv("SCORCH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (install it or set SCORCH_CHROMIUM); CI=true requires the browser test")
	}
	t.Skip("chromium not found; set SCORCH_CHROMIUM to run the browser test")
	return ""
}

// TestBrowser drives the page in headless Chromium for every fixture:
// select a range on the timeline by dragging, search for the hot
// function, click its frame to zoom, and check what the page shows. It
// saves a screenshot to testdata/screenshots/.
func TestBrowser(t *testing.T) {
	exe := chromiumPath(t)
	for _, fx := range loadFixtures(t) {
		t.Run(fx.File, func(t *testing.T) { browseFixture(t, exe, fx) })
	}
}

func browseFixture(t *testing.T, exe string, fx fixture) {
	src, err := FileSource(filepath.Join("testdata", fx.File))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(src, Options{Title: "Scorch test: " + fx.File}))
	defer srv.Close()

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
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	var jsErrors []string
	pageErr := func(msg string) {
		mu.Lock()
		jsErrors = append(jsErrors, msg)
		mu.Unlock()
	}
	err = chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			pageErr(msg)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				pageErr(fmt.Sprintf("console.error: %d args", len(ev.Args)))
			}
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	fail := func(what string, err error) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s: %v (page errors: %q)", what, err, jsErrors)
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			fail(what, err)
		}
	}
	// idle waits until the page is not loading and cond holds.
	idle := func(what string, cond string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.scorchState && scorchState.loading === 0 && !!(`+cond+`)`,
			chromedp.WithPollingTimeout(30*time.Second)))
		if err != nil {
			fail("waiting for "+what, err)
		}
	}
	evalInt := func(expr string) int { t.Helper(); return evalJS[int](t, ctx, fail, expr) }
	evalFloat := func(expr string) float64 { t.Helper(); return evalJS[float64](t, ctx, fail, expr) }
	evalString := func(expr string) string { t.Helper(); return evalJS[string](t, ctx, fail, expr) }

	do("loading the page", chromedp.Navigate(srv.URL+"/"))
	idle("first render", "scorchState.ready && scorchState.drawn > 1")

	// Drag across the middle 60% of the timeline.
	bx, by := evalFloat(`document.getElementById('timeline').getBoundingClientRect().left`), evalFloat(`document.getElementById('timeline').getBoundingClientRect().top`)
	bw, bh := evalFloat(`document.getElementById('timeline').getBoundingClientRect().width`), evalFloat(`document.getElementById('timeline').getBoundingClientRect().height`)
	efrom, eto := evalFloat(`scorchState.extent.from`), evalFloat(`scorchState.extent.to`)
	gen := evalInt(`scorchState.gen`)
	y := by + bh/2
	x0, x1 := bx+0.2*bw, bx+0.8*bw
	do("dragging on the timeline",
		chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x0, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, (x0+x1)/2, y, chromedp.ButtonLeft),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x1, y, chromedp.ButtonLeft),
		chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x1, y, chromedp.ButtonLeft, chromedp.ClickCount(1)),
	)
	idle("render after the drag", fmt.Sprintf("scorchState.gen > %d && scorchState.selection", gen))
	sfrom, sto := evalFloat(`scorchState.selection.from`), evalFloat(`scorchState.selection.to`)
	span := eto - efrom
	if math.Abs(sfrom-(efrom+0.2*span)) > 0.02*span || math.Abs(sto-(efrom+0.8*span)) > 0.02*span {
		t.Errorf("selection [%.0f, %.0f), want about 20%%..80%% of [%.0f, %.0f)", sfrom, sto, efrom, eto)
	}
	if !strings.HasPrefix(evalString(`document.getElementById('range-label').textContent`), "Selected ") {
		t.Error("range label does not show the selection")
	}

	// The top table's first row is the hot function at its share.
	firstName := evalString(`document.querySelector('#top-table tbody tr').dataset.name`)
	selfShare := evalFloat(`+document.querySelector('#top-table tbody tr').dataset.selfShare`)
	if firstName != fx.Hot || math.Abs(selfShare-fx.SelfShare) > fx.Tolerance {
		t.Errorf("top row %q at %.2f%%, want %q at %.0f±%.0f%%", firstName, selfShare, fx.Hot, fx.SelfShare, fx.Tolerance)
	}

	// Search highlights the hot function and reports its share.
	gen = evalInt(`scorchState.gen`)
	do("typing the search", chromedp.SendKeys(chromedp.ID("search"), fx.Search))
	idle("search applied", fmt.Sprintf("scorchState.gen > %d && scorchState.search.query === %q", gen, fx.Search))
	share := evalFloat(`scorchState.search.share`)
	matches := evalInt(`scorchState.search.matches`)
	want := fx.TotalShare
	if want == 0 {
		want = fx.SelfShare
	}
	if matches < 1 || math.Abs(100*share-want) > fx.Tolerance {
		t.Errorf("search %q: share %.2f%% in %d functions, want %.0f±%.0f%%", fx.Search, 100*share, matches, want, fx.Tolerance)
	}
	if shown := evalString(`document.getElementById('search-share').textContent`); !strings.Contains(shown, fmt.Sprintf("%.1f%%", 100*share)) {
		t.Errorf("search share text %q does not show %.1f%%", shown, 100*share)
	}

	// The screenshot shows the search over the whole selection.
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		fail("screenshot", err)
	}
	name := filepath.Join("testdata", "screenshots", strings.TrimSuffix(fx.File, ".pb.gz")+".png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		t.Error(err)
	}

	// Click the hot function's frame to zoom into it.
	rect := fmt.Sprintf(`scorchState.frameRect(%q)`, fx.Hot)
	if evalString(`JSON.stringify(`+rect+`)`) == "null" {
		t.Fatalf("no frame of %s drawn", fx.Hot)
	}
	fx0, fy0 := evalFloat(rect+`.x`), evalFloat(rect+`.y`)
	fw, fh := evalFloat(rect+`.w`), evalFloat(rect+`.h`)
	gen = evalInt(`scorchState.gen`)
	do("clicking the frame", chromedp.MouseClickXY(fx0+fw/2, fy0+fh/2))
	idle("zoom", fmt.Sprintf("scorchState.gen > %d", gen))
	zoomName := evalString(`scorchState.zoom.name`)
	zoomShare := evalFloat(`scorchState.zoom.share`)
	crumb := evalString(`document.querySelector('#breadcrumb span:last-child').textContent`)
	if zoomName != fx.Hot || crumb != fx.Hot || math.Abs(100*zoomShare-want) > fx.Tolerance {
		t.Errorf("zoomed to %q (breadcrumb %q) at %.2f%%, want %q at %.0f%%", zoomName, crumb, 100*zoomShare, fx.Hot, want)
	}

	// Reset goes back to the root.
	do("reset", chromedp.Click(chromedp.ID("reset")))
	idle("reset", `scorchState.zoom.name === 'all'`)

	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("page errors: %q", jsErrors)
	}
}

// evalJS evaluates expr in the page and returns its value as T.
func evalJS[T any](t *testing.T, ctx context.Context, fail func(string, error), expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		fail("evaluating "+expr, err)
	}
	return v
}
