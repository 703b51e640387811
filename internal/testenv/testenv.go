// Package testenv is what the tests of this module share: the one rule for
// a missing prerequisite, the builder of the testdata workloads, and the
// bounds a share measured from samples is judged by. Only _test.go files
// import it (ARCHITECTURE.md; TestArchitecture enforces it).
//
// The rule for prerequisites:
//
//   - A missing tool (clang, bpftool, addr2line, chromium, ...) fails the
//     test, naming the Debian package that provides it (RequireTool). A
//     test never skips for a missing tool: a skipped test passes without
//     checking anything, and CI would stay green with a check gone. The
//     tools and their packages are listed once, in .ci/prereqs.txt, which
//     `make prereqs` checks before any test runs and `.ci/run` installs.
//   - Root is the one prerequisite a test may skip for (RequireRoot): the
//     unprivileged tier (`make test-unit`, go test -short) skips the tests
//     that load BPF programs or mount file systems, even when run as root;
//     under CI (CI set) or `make test` (SCORCH_TEST_STRICT=1) a test that
//     needs root fails when not root; a developer's plain `go test` as
//     another user skips it.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Strict reports whether a missing prerequisite must fail rather than skip:
// under CI (the CI variable set, as CI systems do) or when the Makefile's
// test targets set SCORCH_TEST_STRICT=1.
func Strict() bool {
	return os.Getenv("CI") != "" || os.Getenv("SCORCH_TEST_STRICT") != ""
}

// RequireRoot marks a test that needs root (to load BPF programs, open perf
// events, mount file systems or create cgroups). With -short it skips: that
// is the unprivileged tier, make test-unit. Otherwise it fails when not root
// under Strict, and skips when not root elsewhere.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root: skipped with -short (make test-unit); make test-root runs it")
	}
	if os.Geteuid() == 0 {
		return
	}
	if Strict() {
		t.Fatal("needs root (loads BPF programs or changes the system) and must run under CI and make test: run as root, e.g. sudo make test")
	}
	t.Skip("needs root (loads BPF programs or changes the system); make test-root runs it as root")
}

// Root returns the module's root directory (the one holding go.mod),
// found from the test's working directory.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := root()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

var root = sync.OnceValues(func() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	// make -C reports paths as getcwd(2) does, without symbolic links.
	if wd, err = filepath.EvalSymlinks(wd); err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("testenv: no go.mod in %s or above", wd)
		}
	}
})
