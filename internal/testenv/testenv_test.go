package testenv

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrereqsList parses the committed list: every line well formed, and
// the tools tests ask for are in it.
func TestPrereqsList(t *testing.T) {
	ps, err := ParsePrereqs(filepath.Join(Root(t), PrereqsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"clang", "bpftool", "addr2line", "readelf", "cargo", "xz", "chromium", "node", "unshare", "make", "cc", "c++", "/usr/include/bpf/bpf_helpers.h"} {
		if ps[name].Package == "" {
			t.Errorf("%s is not in %s", name, PrereqsFile)
		}
	}
}

func TestParsePrereqsErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"clang clang needed\nbpftool\n", ":2: \"bpftool\": want NAME PACKAGE WHAT-NEEDS-IT"},
		{"# comment\n\nxz xz-utils a\nxz xz-utils b\n", ":4: xz listed twice"},
	} {
		f := filepath.Join(dir, "list")
		if err := os.WriteFile(f, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ParsePrereqs(f)
		var le *ListError
		if !errors.As(err, &le) || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one ending %q", tc.text, err, tc.want)
		}
	}
}

func TestRequireToolFindsListedTool(t *testing.T) {
	// make is listed and, since the Makefile runs the tests, installed.
	if p := RequireTool(t, "make"); !filepath.IsAbs(p) {
		t.Errorf("RequireTool(make) = %q, want an absolute path", p)
	}
}

// TestFindToolMissing: a missing tool's error names its package; an
// unlisted one says so.
func TestFindToolMissing(t *testing.T) {
	list := map[string]Prereq{
		"scorch-no-such-tool":  {Package: "scorch-pkg"},
		"/scorch/no/such/file": {Package: "scorch-dev"},
	}
	for name, want := range map[string]string{
		"scorch-no-such-tool":  "install the Debian package scorch-pkg",
		"/scorch/no/such/file": "install the Debian package scorch-dev",
		"unlisted":             "unlisted is not in .ci/prereqs.txt",
	} {
		if _, err := findTool(list, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("findTool(%s) = %v, want an error saying %q", name, err, want)
		}
	}
}

func TestShareBounds(t *testing.T) {
	// p = 3/4 of 1875 samples: sigma = 0.01, so 4 sigma = 0.04.
	lo, hi := ShareBounds(0.75, 1875, 0)
	if math.Abs(lo-0.71) > 1e-9 || math.Abs(hi-0.79) > 1e-9 {
		t.Errorf("ShareBounds(0.75, 1875, 0) = %v, %v; want 0.71, 0.79", lo, hi)
	}
	// A certain share has no scatter: only the slack lowers it.
	if lo, hi := ShareBounds(1, 500, 0.01); lo != 0.99 || hi != 1 {
		t.Errorf("ShareBounds(1, 500, 0.01) = %v, %v; want 0.99, 1", lo, hi)
	}
	if lo, hi := ShareBounds(0.5, 0, 0); lo != 0 || hi != 1 {
		t.Errorf("ShareBounds with no samples = %v, %v; want 0, 1", lo, hi)
	}
}

// TestWorkload builds a workload through testdata/Makefile.
func TestWorkload(t *testing.T) {
	p := Workload(t, "syscall-c")
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Workload(syscall-c) = %s: %v", p, err)
	}
	if !strings.HasPrefix(p, Root(t)) {
		t.Errorf("Workload(syscall-c) = %s, not under %s", p, Root(t))
	}
}
