package exporter

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// WriteFile writes p to path atomically (a temporary file renamed into
// place): gzipped pprof, or folded stacks when path ends in .folded or .txt.
func WriteFile(path string, p *profile.Profile) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	w := bufio.NewWriter(tmp)
	if ext := filepath.Ext(path); ext == ".folded" || ext == ".txt" {
		err = WriteFolded(w, p)
	} else {
		err = p.Write(w)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write profile %s: %w", path, err)
	}
	return nil
}

// WriteFolded writes p as folded stacks (root first, frames separated by
// ';', then a space and the sample count), the format of Brendan Gregg's
// flamegraph.pl and of many flame graph tools. Inlined frames each get their
// own entry; the process name is the root frame.
func WriteFolded(w io.Writer, p *profile.Profile) error {
	counts := map[string]int64{}
	var frames []string
	for _, s := range p.Sample {
		frames = frames[:0]
		for i := len(s.Location) - 1; i >= 0; i-- {
			loc := s.Location[i]
			for j := len(loc.Line) - 1; j >= 0; j-- {
				frames = append(frames, foldedName(loc.Line[j].Function))
			}
		}
		root := "unknown"
		if c := s.Label["comm"]; len(c) > 0 {
			root = c[0]
		}
		key := sanitizeFrame(root) + ";" + strings.Join(frames, ";")
		counts[key] += s.Value[0]
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := fmt.Fprintf(w, "%s %d\n", k, counts[k]); err != nil {
			return err
		}
	}
	return nil
}

func foldedName(f *profile.Function) string {
	if f == nil {
		return "[unknown]"
	}
	return sanitizeFrame(f.Name)
}

// sanitizeFrame keeps a frame name from breaking the folded format, where ';'
// separates frames and a line ends in " count".
func sanitizeFrame(s string) string {
	return strings.NewReplacer(";", ":", "\n", " ").Replace(s)
}

// TopEntry is one function's share of a profile.
type TopEntry struct {
	Name        string
	Self, Total int64 // in samples
}

// Top returns the n functions with the most self samples (the leaf
// function of each sample; inlined frames count for the innermost), with
// their total (anywhere on the stack, once per sample), and the total
// number of samples.
func Top(p *profile.Profile, n int) ([]TopEntry, int64) {
	self := map[string]int64{}
	total := map[string]int64{}
	var all int64
	seen := map[string]bool{}
	for _, s := range p.Sample {
		v := s.Value[0]
		all += v
		clear(seen)
		for i, loc := range s.Location {
			for j, ln := range loc.Line {
				name := foldedName(ln.Function)
				if i == 0 && j == 0 {
					self[name] += v
				}
				if !seen[name] {
					seen[name] = true
					total[name] += v
				}
			}
		}
	}
	out := make([]TopEntry, 0, len(total))
	for name, t := range total {
		out = append(out, TopEntry{Name: name, Self: self[name], Total: t})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Self != out[j].Self {
			return out[i].Self > out[j].Self
		}
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].Name < out[j].Name
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, all
}
