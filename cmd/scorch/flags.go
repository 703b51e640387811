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
			return fmt.Errorf("not a process id: %q", f)
		}
		*p = append(*p, uint32(n))
	}
	return nil
}

// newFlagSet returns a FlagSet whose errors come back to the caller as
// usage errors and whose --help goes to stdout.
func newFlagSet(name, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("scorch "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: scorch %s %s\n\nFlags:\n", name, synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args, printing help on -h and turning errors into
// usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.Usage()
			return err
		}
		return usageError{err}
	}
	return nil
}

func checkFrequency(hz int) error {
	if hz < 1 || hz > 100000 {
		return usageError{fmt.Errorf("--frequency %d is out of range (1 to 100000 Hz)", hz)}
	}
	return nil
}
