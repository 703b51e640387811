package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// pidList is a repeatable --pid flag that also takes comma-separated lists.
type pidList []uint32

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a process id: want a positive number such as 1234, or a comma-separated list of them", f)
		}
		*p = append(*p, uint32(n))
	}
	return nil
}

// flagSet is a command's flags and its --help text.
type flagSet struct {
	*flag.FlagSet
	name, synopsis string
	stdout         io.Writer
}

// newFlagSet returns a flagSet whose errors come back to the caller as
// usage errors (main prints them with a hint, on stderr) and whose --help
// prints the usage once, on stdout.
func newFlagSet(name, synopsis string, stdout io.Writer) *flagSet {
	fs := flag.NewFlagSet("scorch "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package calls it on errors too
	return &flagSet{FlagSet: fs, name: name, synopsis: synopsis, stdout: stdout}
}

// parseFlags parses args, printing the usage on --help (and returning
// flag.ErrHelp) and turning errors into usage errors.
func parseFlags(fs *flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.printUsage(fs.stdout)
			return err
		}
		return usageError{err}
	}
	return nil
}

// printUsage writes the synopsis and every flag, with "--" before flag
// names and the form of each value.
func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: scorch %s %s\n\nFlags:\n", fs.name, fs.synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if t, ok := f.Value.(interface{ Type() string }); ok {
			typ = t.Type()
		}
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch d := f.DefValue; d {
		case "", "0", "0s", "false", "[]", "map[]":
		default:
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					d = strconv.Quote(d)
				}
			}
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	})
}

func checkFrequency(hz int) error {
	if hz < 1 || hz > 100000 {
		return usageError{fmt.Errorf("--frequency %d is out of range (1 to 100000 Hz)", hz)}
	}
	return nil
}
