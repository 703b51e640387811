package agent

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scorch-profiler/scorch/internal/flagval"
)

// Config is everything `scorch agent` can be told. Each field is one flag;
// every flag can also be given as an environment variable (SCORCH_ and the
// flag name in upper case with '-' as '_', e.g. SCORCH_PYROSCOPE_URL) or as
// a key of the YAML file named by --config (the flag name as the key; a
// list for repeatable flags). Precedence: command line, then environment,
// then file, then the default.
type Config struct {
	Frequency     int
	StackMapSize  int
	Interval      time.Duration
	DataDir       string
	Retention     time.Duration
	RetentionSize int64
	Listen        string
	Labels        map[string]string
	Include       []Rule
	Exclude       []Rule
	ServiceRules  []ServiceRule
	// PidSeries keeps pid as a target label: one profile (and one
	// Pyroscope series) per process rather than per service.
	PidSeries   bool
	DropIdle    bool
	Demangle    string
	SymbolCache int64
	LogLevel    string
	LogFormat   string
	// DropPrivileges drops every capability but those symbolization needs
	// once the BPF program is loaded and the perf events are open.
	DropPrivileges bool

	PyroscopeURL          string
	PyroscopeUser         string
	PyroscopePassword     string // from SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD or the password file only
	PyroscopePasswordFile string
	PyroscopeTokenFile    string
	PyroscopeToken        string // from SCORCH_PYROSCOPE_BEARER_TOKEN or the token file only
	PyroscopeTenant       string
	PyroscopeCAFile       string
	PyroscopeInsecure     bool
	PyroscopeTimeout      time.Duration
	QueueSize             int64

	// AllowNoOutput lets the agent run when it would keep nothing: no
	// store, no listener and no Pyroscope URL.
	AllowNoOutput bool
}

// Rule matches processes by one field: exe (the executable's path), comm
// (the process name), cgroup (the cgroup v2 path) or pid, with a regular
// expression (pid: the exact number).
type Rule struct {
	Field string
	Re    *regexp.Regexp
}

func (r Rule) String() string { return r.Field + ":" + r.Re.String() }

// ServiceRule names the service of the processes a Rule matches.
type ServiceRule struct {
	Service string
	Rule
}

var ruleFields = map[string]bool{"exe": true, "comm": true, "cgroup": true, "pid": true}

func parseRule(s string) (Rule, error) {
	field, expr, ok := strings.Cut(s, ":")
	if !ok || !ruleFields[field] {
		return Rule{}, fmt.Errorf("rule %q: want FIELD:REGEX with FIELD one of exe, comm, cgroup, pid", s)
	}
	if field == "pid" {
		if _, err := strconv.ParseUint(expr, 10, 32); err != nil {
			return Rule{}, fmt.Errorf("rule %q: pid rules take a number", s)
		}
		expr = "^" + expr + "$"
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return Rule{}, fmt.Errorf("rule %q: %v", s, err)
	}
	return Rule{Field: field, Re: re}, nil
}

type ruleList []Rule

func (l *ruleList) String() string { return fmt.Sprint(*l) }
func (l *ruleList) Set(s string) error {
	r, err := parseRule(s)
	if err != nil {
		return err
	}
	*l = append(*l, r)
	return nil
}

type serviceRuleList []ServiceRule

func (l *serviceRuleList) String() string { return fmt.Sprint(*l) }
func (l *serviceRuleList) Set(s string) error {
	name, rule, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("service rule %q: want SERVICE=FIELD:REGEX", s)
	}
	r, err := parseRule(rule)
	if err != nil {
		return err
	}
	*l = append(*l, ServiceRule{Service: name, Rule: r})
	return nil
}

type labelMap map[string]string

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func (m labelMap) String() string { return fmt.Sprint(map[string]string(m)) }
func (m labelMap) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || !labelName.MatchString(k) || strings.HasPrefix(k, "__") {
		return fmt.Errorf("label %q: want NAME=VALUE, NAME a Prometheus label name not starting with __", s)
	}
	m[k] = v
	return nil
}

// bytesValue is a size flag: 64MiB, 1GiB, 500MB or a number of bytes.
type bytesValue struct{ p *int64 }

func (b bytesValue) String() string {
	if b.p == nil {
		return ""
	}
	return strconv.FormatInt(*b.p, 10)
}

func (b bytesValue) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b.p = n
	return nil
}

// ParseBytes reads sizes such as 64MiB, 1GiB, 500MB, 4096.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with a unit (KiB, MiB, GiB, MB, GB)", s)
	}
	return int64(n * float64(mult)), nil
}

// Flags registers the agent's flags on fs, writing into c.
func (c *Config) Flags(fs *flag.FlagSet) {
	c.Labels = map[string]string{}
	flagval.IntVar(fs, &c.Frequency, "frequency", 99, "samples per second on each CPU")
	flagval.IntVar(fs, &c.StackMapSize, "stack-map-size", 0, "distinct stacks of each kind the kernel keeps between drains (about 1 KiB of kernel memory each, per kind, twice; 0: every sample of two seconds on every CPU at --frequency, at least 1024); more are counted as lost")
	flagval.DurationVar(fs, &c.Interval, "interval", 15*time.Second, "length of a profile window; windows align to wall-clock multiples of it")
	fs.StringVar(&c.DataDir, "data-dir", "/var/lib/scorch", "local store of windows, read by the viewer (empty: keep nothing on disk)")
	flagval.DurationVar(fs, &c.Retention, "retention", 72*time.Hour, "delete stored windows older than this")
	c.RetentionSize = 1 << 30
	fs.Var(bytesValue{&c.RetentionSize}, "retention-size", "delete the oldest stored windows beyond this total size (e.g. 1GiB)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7070", "address of the viewer, /metrics, /healthz and /debug/pprof/ (empty: no listener). Binding beyond loopback exposes profiles: do it deliberately")
	fs.Var(labelMap(c.Labels), "label", "static label NAME=VALUE added to every profile (repeatable)")
	fs.Var((*ruleList)(&c.Include), "include", "profile only processes matching FIELD:REGEX, FIELD one of exe, comm, cgroup, pid (repeatable; any match includes)")
	fs.Var((*ruleList)(&c.Exclude), "exclude", "do not profile processes matching FIELD:REGEX (repeatable; wins over --include)")
	fs.Var((*serviceRuleList)(&c.ServiceRules), "service-name", "SERVICE=FIELD:REGEX: name the service of matching processes (repeatable; first match wins; default: container, then executable name)")
	flagval.BoolVar(fs, &c.PidSeries, "series-per-pid", false, "make pid a series label: one profile and Pyroscope series per process, not per service (every short-lived process becomes a series; the pid is a sample label inside each profile either way)")
	flagval.BoolVar(fs, &c.DropIdle, "drop-idle", true, "do not record the idle task")
	fs.StringVar(&c.Demangle, "demangle", "full", "C++/Rust names: full, simplified or none")
	c.SymbolCache = 64 << 20
	fs.Var(bytesValue{&c.SymbolCache}, "symbol-cache-size", "bound of the symbol table cache (e.g. 64MiB)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	flagval.BoolVar(fs, &c.DropPrivileges, "drop-privileges", true, "once sampling runs, keep only CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYSLOG and CAP_CHECKPOINT_RESTORE (all threads; needs a CGO_ENABLED=0 build, which make build and the Dockerfile produce)")

	fs.StringVar(&c.PyroscopeURL, "pyroscope-url", "", "push profiles to this Pyroscope server or Grafana Cloud Profiles URL (empty: don't push)")
	fs.StringVar(&c.PyroscopeUser, "pyroscope-basic-auth-user", "", "basic auth user (Grafana Cloud: the stack's user id)")
	fs.StringVar(&c.PyroscopePasswordFile, "pyroscope-basic-auth-password-file", "", "file holding the basic auth password (Grafana Cloud: an access token); or set SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD")
	fs.StringVar(&c.PyroscopeTokenFile, "pyroscope-bearer-token-file", "", "file holding a bearer token; or set SCORCH_PYROSCOPE_BEARER_TOKEN")
	fs.StringVar(&c.PyroscopeTenant, "pyroscope-tenant", "", "tenant id, sent as X-Scope-OrgID")
	fs.StringVar(&c.PyroscopeCAFile, "pyroscope-ca-file", "", "PEM file of extra certificate authorities for the server")
	flagval.BoolVar(fs, &c.PyroscopeInsecure, "pyroscope-insecure-skip-verify", false, "do not verify the server's certificate (testing only)")
	flagval.DurationVar(fs, &c.PyroscopeTimeout, "pyroscope-timeout", 10*time.Second, "timeout of one push request")
	c.QueueSize = 16 << 20
	fs.Var(bytesValue{&c.QueueSize}, "queue-size", "bound of the send queue in bytes; when full the oldest window is dropped")
	flagval.BoolVar(fs, &c.AllowNoOutput, "allow-no-output", false, "run even with no --data-dir, no --listen and no --pyroscope-url, keeping nothing (e.g. to measure the agent's own cost)")
}

// EnvName is the environment variable for a flag.
func EnvName(flagName string) string {
	return "SCORCH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnvAndFile fills the flags not given on the command line from the
// environment, then from the YAML file at path (if not empty), and reads the
// secrets that only come from files or the environment.
func (c *Config) ApplyEnvAndFile(fs *flag.FlagSet, path string, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var file map[string]any
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
		for k := range file {
			if hint, ok := SecretHint(k); ok {
				return fmt.Errorf("config file %s: key %q: secrets are not read from the config file: %s", path, k, hint)
			}
			if fs.Lookup(k) == nil || k == "config" {
				return fmt.Errorf("config file %s: unknown key %q (keys are the flag names of 'scorch agent --help')", path, k)
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "config" {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			for _, part := range splitList(f, v) {
				if e := f.Value.Set(part); e != nil {
					err = fmt.Errorf("%s=%q: %v", EnvName(f.Name), part, e)
					return
				}
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			var vals []string
			switch t := v.(type) {
			case []any:
				for _, x := range t {
					vals = append(vals, fmt.Sprint(x))
				}
			case map[string]any: // labels as a mapping
				for k, x := range t {
					vals = append(vals, k+"="+fmt.Sprint(x))
				}
			default:
				vals = []string{fmt.Sprint(t)}
			}
			for _, s := range vals {
				if e := f.Value.Set(s); e != nil {
					err = fmt.Errorf("config file %s: %s=%q: %v", path, f.Name, s, e)
					return
				}
			}
		}
	})
	if err != nil {
		return err
	}
	c.PyroscopePassword = getenv("SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD")
	c.PyroscopeToken = getenv("SCORCH_PYROSCOPE_BEARER_TOKEN")
	if c.PyroscopePasswordFile != "" {
		if c.PyroscopePassword, err = readSecret(c.PyroscopePasswordFile); err != nil {
			return err
		}
	}
	if c.PyroscopeTokenFile != "" {
		if c.PyroscopeToken, err = readSecret(c.PyroscopeTokenFile); err != nil {
			return err
		}
	}
	return c.validate()
}

// secretFiles maps the names a user may try for a secret to the flag
// that names the file holding it and the environment variable that may
// hold it instead.
var secretFiles = map[string][2]string{
	"pyroscope-basic-auth-password": {"pyroscope-basic-auth-password-file", "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD"},
	"pyroscope-password":            {"pyroscope-basic-auth-password-file", "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD"},
	"password":                      {"pyroscope-basic-auth-password-file", "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD"},
	"pyroscope-bearer-token":        {"pyroscope-bearer-token-file", "SCORCH_PYROSCOPE_BEARER_TOKEN"},
	"pyroscope-token":               {"pyroscope-bearer-token-file", "SCORCH_PYROSCOPE_BEARER_TOKEN"},
	"token":                         {"pyroscope-bearer-token-file", "SCORCH_PYROSCOPE_BEARER_TOKEN"},
}

// SecretHint says where a secret goes when name, a config key or flag
// name, is one that would hold it in plain text.
func SecretHint(name string) (string, bool) {
	f, ok := secretFiles[name]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("put it in a file readable only by the agent and name that file with %s (--%s), or set %s", f[0], f[0], f[1]), true
}

// splitList splits an environment value of a repeatable flag on commas
// (rules and labels may be given as a comma-separated list).
func splitList(f *flag.Flag, v string) []string {
	switch f.Name {
	case "label", "include", "exclude", "service-name":
		return strings.Split(v, ",")
	}
	return []string{v}
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ErrNoOutput refuses a configuration that would profile and keep nothing.
var ErrNoOutput = errors.New("this agent would keep nothing: give it a --data-dir (local store), a --listen address (viewer and /metrics) or a --pyroscope-url; --allow-no-output runs it anyway")

func (c *Config) validate() error {
	switch {
	case c.Frequency < 1 || c.Frequency > 100000:
		return fmt.Errorf("--frequency %d is out of range (1 to 100000 Hz)", c.Frequency)
	case c.StackMapSize != 0 && (c.StackMapSize < 64 || c.StackMapSize > 1<<20):
		return fmt.Errorf("--stack-map-size %d is out of range (0, or 64 to 1048576)", c.StackMapSize)
	case c.Interval < time.Second:
		return fmt.Errorf("--interval %s is too short (at least 1s)", c.Interval)
	case c.Retention <= 0:
		return fmt.Errorf("--retention %s: want a positive duration such as 72h", c.Retention)
	case c.PyroscopeTimeout <= 0:
		return fmt.Errorf("--pyroscope-timeout %s: want a positive duration such as 10s", c.PyroscopeTimeout)
	case c.RetentionSize <= 0:
		return fmt.Errorf("--retention-size %d: want a positive size such as 1GiB", c.RetentionSize)
	case c.QueueSize <= 0:
		return fmt.Errorf("--queue-size %d: want a positive size such as 16MiB", c.QueueSize)
	case c.SymbolCache <= 0:
		return fmt.Errorf("--symbol-cache-size %d: want a positive size such as 64MiB", c.SymbolCache)
	case c.DataDir == "" && c.Listen == "" && c.PyroscopeURL == "" && !c.AllowNoOutput:
		return ErrNoOutput
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	case c.PyroscopeToken != "" && (c.PyroscopeUser != "" || c.PyroscopePassword != ""):
		return fmt.Errorf("use either basic auth or a bearer token for Pyroscope, not both")
	}
	switch c.Demangle {
	case "full", "simplified", "none":
	default:
		return fmt.Errorf("--demangle %q: want full, simplified or none", c.Demangle)
	}
	return nil
}
