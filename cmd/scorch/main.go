// Command scorch is a continuous CPU profiler for Linux built on eBPF.
//
//	scorch record [flags]      profile the host (or some processes) once, write a pprof
//	scorch agent [flags]       profile continuously, store and push labelled profiles, serve the viewer
//	scorch view FILE [flags]   serve the flame graph viewer for one pprof file
//	scorch version             print the version and build information (also --version)
//
// Run `scorch COMMAND --help` for a command's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/scorch-profiler/scorch/internal/sampler"
)

// version is set by the build (-ldflags "-X main.version=..."); without
// it, the module version or VCS revision Go stamped into the binary is used.
var version = ""

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"record", "profile the host or some processes once and write a pprof file", runRecord},
		{"agent", "profile continuously: store, push and serve labelled profiles", runAgent},
		{"view", "serve the flame graph viewer for a pprof file", runView},
		{"version", "print the version and how the binary was built (also: scorch --version)", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Scorch: a continuous CPU profiler for Linux, on eBPF.\n\nUsage: scorch COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'scorch COMMAND --help' for the flags of a command.\n")
}

// usageError marks errors in how scorch was called: exit code 2.
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		var uerr usageError
		var rerr *sampler.RequirementError
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &uerr):
			fmt.Fprintf(stderr, "scorch %s: %v\nRun 'scorch %s --help' for usage.\n", c.name, err, c.name)
			return 2
		case errors.As(err, &rerr):
			fmt.Fprintf(stderr, "scorch %s: %v\n", c.name, err)
			return 1
		default:
			fmt.Fprintf(stderr, "scorch %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "scorch: unknown command %q\nRun 'scorch --help' for the commands.\n", args[0])
	return 2
}
