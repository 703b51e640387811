package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// PrereqsFile is the list of prerequisites, relative to the module root.
const PrereqsFile = ".ci/prereqs.txt"

// Prereq is one line of the list: a command or absolute path, the Debian
// package that provides it, and what needs it.
type Prereq struct {
	Name    string
	Package string
	Why     string
}

// ListError is a malformed line of the prerequisites list.
type ListError struct {
	File string
	Line int
	Msg  string
}

func (e *ListError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// ParsePrereqs reads the list: "NAME PACKAGE WHY...", '#' comments and
// blank lines ignored. A name listed twice is an error.
func ParsePrereqs(file string) (map[string]Prereq, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]Prereq{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, &ListError{file, n, fmt.Sprintf("%q: want NAME PACKAGE WHAT-NEEDS-IT", line)}
		}
		if _, dup := out[fields[0]]; dup {
			return nil, &ListError{file, n, fmt.Sprintf("%s listed twice", fields[0])}
		}
		out[fields[0]] = Prereq{Name: fields[0], Package: fields[1], Why: strings.Join(fields[2:], " ")}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

var (
	prereqsOnce sync.Once
	prereqs     map[string]Prereq
	prereqsErr  error
)

// RequireTool returns the path of a command on PATH, or checks that an
// absolute path exists (and returns it). When it is missing the test fails
// with the Debian package that provides it: see the package comment for
// why it never skips. The name must be in .ci/prereqs.txt, so that
// `make prereqs` checks it before the tests run.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	prereqsOnce.Do(func() {
		var dir string
		if dir, prereqsErr = root(); prereqsErr == nil {
			prereqs, prereqsErr = ParsePrereqs(filepath.Join(dir, PrereqsFile))
		}
	})
	if prereqsErr != nil {
		t.Fatalf("testenv: %v", prereqsErr)
	}
	path, err := findTool(prereqs, name)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// findTool looks name up: its path, or an error naming the package that
// provides it (or saying that it is not listed).
func findTool(list map[string]Prereq, name string) (string, error) {
	p, ok := list[name]
	if !ok {
		return "", fmt.Errorf("testenv: %s is not in %s: add it with the Debian package that provides it, so that make prereqs checks it", name, PrereqsFile)
	}
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("%s missing: install the Debian package %s (apt-get install %s; make prereqs checks every prerequisite): %v", name, p.Package, p.Package, err)
		}
		return name, nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH: install the Debian package %s (apt-get install %s; make prereqs checks every prerequisite)", name, p.Package, p.Package)
	}
	return path, nil
}
