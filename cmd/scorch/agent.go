package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/scorch-profiler/scorch/internal/agent"
)

func runAgent(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent", "[flags]\n\nProfiles every process continuously. Every --interval it closes a window and builds one\npprof per target (service_name plus labels), keeps it in --data-dir and pushes it to\n--pyroscope-url. The listener serves the flame graph viewer, /metrics, /healthz and\n/debug/pprof/. SIGINT or SIGTERM flush the last window and exit 0.\n\nEvery flag can also be set in the environment as SCORCH_<FLAG> (e.g. SCORCH_PYROSCOPE_URL)\nor in the YAML file of --config (flag names as keys). Precedence: flag, environment, file,\ndefault. Secrets are read from files or the environment only:\nSCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD, SCORCH_PYROSCOPE_BEARER_TOKEN (or the files of\n--pyroscope-basic-auth-password-file, --pyroscope-bearer-token-file). The agent refuses to\nrun when it would keep nothing (no --data-dir, --listen or --pyroscope-url) unless\n--allow-no-output is given. The Go collector runs at\nGOGC=50 unless GOGC is set, Go code on one thread unless GOMAXPROCS is set; GOMEMLIMIT\ncaps the heap.\n\nRules (--include, --exclude, --service-name) match FIELD:REGEX with FIELD one of\nexe, comm, cgroup, pid. Examples:\n  --exclude comm:^kworker          leave kernel workers out\n  --include cgroup:kubepods        only Kubernetes pods\n  --service-name db=exe:/postgres$  call postgres processes 'db'", stdout)
	var cfg agent.Config
	cfg.Flags(fs.FlagSet)
	configFile := fs.String("config", "", "YAML file of settings (keys are flag names)")
	if err := secretFlag(args); err != nil {
		return err
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *configFile == "" {
		*configFile = os.Getenv(agent.EnvName("config"))
	}
	if err := cfg.ApplyEnvAndFile(fs.FlagSet, *configFile, os.Getenv); err != nil {
		return usageError{err}
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %v", err)}
	}
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	logger := slog.New(h)
	// A host agent's memory is taken from everything else on the host:
	// collect when the heap has grown by half, not doubled (Go's default),
	// which takes about 7 MB off the RSS with 200 busy processes on the
	// host (bench/RESULTS.md). The GOGC environment variable overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
	// The agent's Go code runs on one thread at a time unless GOMAXPROCS
	// is set. Its work arrives in small pieces (a process's exec, its
	// first sample, its exit; a drain), and with more than one P the
	// scheduler wakes idle threads to look for each piece: on a host
	// starting 100 processes a second that doubled its wakeups (about 900
	// a second against 450) and cost it a quarter to a half more CPU
	// (bench/RESULTS.md, churn). Blocking reads still overlap, and no
	// work of the agent needs more than one core.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(agentMaxProcs)
	}

	a, err := agent.New(cfg, logger)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raisePriority()
	return a.Run(ctx)
}

// secretFlag refuses a secret given as a flag (which every user of the
// host can read in /proc/PID/cmdline), naming where it goes instead.
func secretFlag(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if hint, ok := agent.SecretHint(name); ok {
			return usageError{fmt.Errorf("--%s: secrets are not taken on the command line: %s", name, hint)}
		}
	}
	return nil
}

// agentGCPercent is the agent's default GOGC.
const agentGCPercent = 50

// agentMaxProcs is the agent's default GOMAXPROCS.
const agentMaxProcs = 1
