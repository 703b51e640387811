package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

func runVersion(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("version", "\n\nPrints the version, then how the binary was built in the form of 'go version -m':\nGo version, module, dependencies and build settings (VCS revision, time, modified).", stdout)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprintf(stdout, "scorch %s\n", buildVersion(bi, ok))
	if ok {
		fmt.Fprint(stdout, bi.String())
	}
	return nil
}

// buildVersion is the version set by the build (-X main.version), else
// the main module's version Go stamped (a tag, or a pseudo-version from
// the VCS), else the VCS revision, else "devel".
func buildVersion(bi *debug.BuildInfo, ok bool) string {
	if version != "" {
		return version
	}
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	rev = rev[:min(len(rev), 12)]
	if modified == "true" {
		rev += "-dirty"
	}
	return strings.TrimSpace("devel " + rev)
}
