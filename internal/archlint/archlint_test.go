// Package archlint holds one test, TestArchitecture: the package table of
// ARCHITECTURE.md ("may be imported by") is a rule, checked against the
// imports of every package of the module as `go list` reports them. It is
// run by `make lint` and `make test`; a forbidden import fails it, naming
// the importer, the import and who may import it.
package archlint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// rule is one row of the table: who may import pkg. Importers are module
// paths ("internal/agent"); anyone and tests are the table's words
// "anyone" and "tests" (only _test.go files); nobody is an empty list.
type rule struct {
	pkg       string
	importers []string
	anyone    bool
	tests     bool
	line      int // in ARCHITECTURE.md
}

// tableError is a malformed row of the table.
type tableError struct {
	line int
	msg  string
}

func (e *tableError) Error() string { return fmt.Sprintf("ARCHITECTURE.md:%d: %s", e.line, e.msg) }

var (
	codeSpan    = regexp.MustCompile("`([^`]+)`")
	parenthesis = regexp.MustCompile(`\([^)]*\)`)
)

// parseTable reads the first table under "## Packages": rows of
// | `package` | owns | may be imported by |.
func parseTable(r io.Reader) (map[string]rule, error) {
	rules := map[string]rule{}
	sc := bufio.NewScanner(r)
	inSection, inTable := false, false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			if inTable {
				break
			}
			inSection = line == "## Packages"
			continue
		}
		if !inSection {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if !inTable {
			if len(cells) != 3 || cells[0] != "package" || cells[2] != "may be imported by" {
				return nil, &tableError{n, fmt.Sprintf("table header %q: want | package | owns | may be imported by |", line)}
			}
			inTable = true
			continue
		}
		if strings.Trim(cells[0], "-: ") == "" { // the |---| row
			continue
		}
		if len(cells) != 3 {
			return nil, &tableError{n, fmt.Sprintf("%d cells, want 3", len(cells))}
		}
		m := codeSpan.FindStringSubmatch(cells[0])
		if m == nil {
			return nil, &tableError{n, fmt.Sprintf("package cell %q: want a `path`", cells[0])}
		}
		r := rule{pkg: m[1], line: n}
		// Remarks in parentheses ("(and `bpf/src` includes its header)")
		// name no importer.
		who := parenthesis.ReplaceAllString(cells[2], "")
		for _, m := range codeSpan.FindAllStringSubmatch(who, -1) {
			r.importers = append(r.importers, m[1])
		}
		words := strings.Fields(strings.ToLower(codeSpan.ReplaceAllString(who, "")))
		switch {
		case len(r.importers) > 0:
		case slices.Equal(words, []string{"anyone"}):
			r.anyone = true
		case slices.Equal(words, []string{"tests"}):
			r.tests = true
		case slices.Equal(words, []string{"nobody"}):
		default:
			return nil, &tableError{n, fmt.Sprintf("importers %q: want `paths`, anyone, tests or nobody", cells[2])}
		}
		if _, dup := rules[r.pkg]; dup {
			return nil, &tableError{n, r.pkg + " listed twice"}
		}
		rules[r.pkg] = r
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, errors.New("ARCHITECTURE.md: no package table under \"## Packages\"")
	}
	return rules, nil
}

// pkg is what go list says of one package, with paths relative to the
// module ("internal/agent"); imports from outside the module are dropped.
type pkg struct {
	path        string
	imports     []string // by its non-test files
	testImports []string // by its _test.go files
}

// check returns one message per import the rules forbid, and per package
// imported by another that the table does not cover: a package must have
// a row unless Go's internal rule already confines it to a listed
// package's tree (symbolizer/internal/dwarfsym under symbolizer).
func check(rules map[string]rule, pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		for _, imp := range p.imports {
			if isUnder(imp, p.path) {
				continue // a package's own subpackages
			}
			r, ok := rules[imp]
			switch {
			case !ok:
				if owner, confined := confinedTo(imp); !confined || !listed(rules, owner) {
					out = append(out, fmt.Sprintf("%s imports %s, which ARCHITECTURE.md's package table does not list: add a row saying who may import it", p.path, imp))
				}
			case r.anyone:
			case r.tests:
				out = append(out, fmt.Sprintf("%s imports %s, which only tests may import (ARCHITECTURE.md:%d): import it from _test.go files only", p.path, imp, r.line))
			case !slices.ContainsFunc(r.importers, func(i string) bool { return isUnder(p.path, i) }):
				who := "nobody"
				if len(r.importers) > 0 {
					who = "only " + strings.Join(r.importers, ", ")
				}
				out = append(out, fmt.Sprintf("%s imports %s, which %s may import (ARCHITECTURE.md:%d)", p.path, imp, who, r.line))
			}
		}
	}
	return out
}

// isUnder reports whether path is dir or inside it.
func isUnder(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// confinedTo returns the package whose tree Go's internal rule confines
// path to: "symbolizer" for "symbolizer/internal/dwarfsym". The module's
// top-level internal/ packages are confined to the module only.
func confinedTo(path string) (string, bool) {
	i := strings.LastIndex("/"+path+"/", "/internal/")
	if i <= 0 {
		return "", false
	}
	return path[:i-1], true
}

func listed(rules map[string]rule, path string) bool {
	_, ok := rules[path]
	return ok
}

// goList runs go list over the module and returns its packages.
func goList(t *testing.T, root string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Module,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
			Module                             struct{ Path string }
			Error                              *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		mod := p.Module.Path + "/"
		local := func(paths []string) []string {
			var out []string
			for _, i := range paths {
				if rel, ok := strings.CutPrefix(i, mod); ok {
					out = append(out, rel)
				}
			}
			return out
		}
		rel, _ := strings.CutPrefix(p.ImportPath, mod)
		pkgs = append(pkgs, pkg{path: rel, imports: local(p.Imports), testImports: local(append(p.TestImports, p.XTestImports...))})
	}
	return pkgs
}

func readTable(t *testing.T, root string) map[string]rule {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules, err := parseTable(f)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// TestArchitecture checks every import of the module against the table,
// and that every row names a directory that exists.
func TestArchitecture(t *testing.T) {
	root := testenv.Root(t)
	rules := readTable(t, root)
	for _, r := range rules {
		if fi, err := os.Stat(filepath.Join(root, r.pkg)); err != nil || !fi.IsDir() {
			t.Errorf("ARCHITECTURE.md:%d: %s is not a directory of the module", r.line, r.pkg)
		}
	}
	pkgs := goList(t, root)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for _, msg := range check(rules, pkgs) {
		t.Error(msg)
	}
}

// TestForbiddenImportFails feeds check the real table and the real
// packages plus one import the table forbids, in each way it can: a
// package importing cmd/scorch (nobody may), web importing
// internal/sampler (only some may), the agent importing internal/testenv
// from non-test code (only tests may) and a package importing one the
// table does not list. Each must be reported; a test file importing
// testenv must not.
func TestForbiddenImportFails(t *testing.T) {
	root := testenv.Root(t)
	rules := readTable(t, root)
	pkgs := goList(t, root)
	before := check(rules, pkgs) // TestArchitecture reports these
	for _, tc := range []struct {
		importer, imp, want string
	}{
		{"web", "cmd/scorch", "web imports cmd/scorch, which nobody may import"},
		{"web", "internal/sampler", "web imports internal/sampler, which only "},
		{"internal/agent", "internal/testenv", "internal/agent imports internal/testenv, which only tests may import"},
		{"web", "internal/newpkg", "web imports internal/newpkg, which ARCHITECTURE.md's package table does not list"},
	} {
		bad := slices.Clone(pkgs)
		bad = append(bad, pkg{path: tc.importer, imports: []string{tc.imp}})
		msgs := slices.DeleteFunc(check(rules, bad), func(m string) bool { return slices.Contains(before, m) })
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0], tc.want) {
			t.Errorf("%s importing %s: check said %q, want one message starting %q", tc.importer, tc.imp, msgs, tc.want)
		}
	}
	// Tests may import testenv and anything else: only non-test imports
	// are held to the table.
	withTest := append(slices.Clone(pkgs), pkg{path: "web", testImports: []string{"internal/testenv", "cmd/scorch"}})
	if msgs := check(rules, withTest); len(msgs) != len(before) {
		t.Errorf("test imports reported: %v", msgs)
	}
}

func TestParseTableErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"## Packages\n\n| pkg | owns |\n|---|---|\n", "ARCHITECTURE.md:3: table header"},
		{"## Packages\n\n| package | owns | may be imported by |\n|---|---|---|\n| web | page | anyone |\n", "ARCHITECTURE.md:5: package cell \"web\""},
		{"## Packages\n\n| package | owns | may be imported by |\n|---|---|---|\n| `web` | page | some people |\n", "ARCHITECTURE.md:5: importers \"some people\""},
		{"## Packages\n\n| package | owns | may be imported by |\n|---|---|---|\n| `web` | a | anyone |\n| `web` | b | anyone |\n", "ARCHITECTURE.md:6: web listed twice"},
		{"# Nothing\n", "no package table"},
	} {
		_, err := parseTable(strings.NewReader(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.doc, err, tc.want)
		}
	}
}
