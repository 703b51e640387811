package agent

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scorch-profiler/scorch/internal/sampler"
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
	DropIdle      bool
	Demangle      string
	SymbolCache   int64
	LogLevel      string
	LogFormat     string
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
	fs.IntVar(&c.Frequency, "frequency", 99, "samples per second on each CPU")
	fs.IntVar(&c.StackMapSize, "stack-map-size", sampler.DefaultStackMapEntries, "distinct stacks of each kind the kernel keeps between drains (about 1 KiB of kernel memory each, per kind, twice); more are counted as lost")
	fs.DurationVar(&c.Interval, "interval", 15*time.Second, "length of a profile window; windows align to wall-clock multiples of it")
	fs.StringVar(&c.DataDir, "data-dir", "/var/lib/scorch", "local store of windows, read by the viewer (empty: keep nothing on disk)")
	fs.DurationVar(&c.Retention, "retention", 72*time.Hour, "delete stored windows older than this")
	c.RetentionSize = 1 << 30
	fs.Var(bytesValue{&c.RetentionSize}, "retention-size", "delete the oldest stored windows beyond this total size (e.g. 1GiB)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7070", "address of the viewer, /metrics, /healthz and /debug/pprof/ (empty: no listener). Binding beyond loopback exposes profiles: do it deliberately")
	fs.Var(labelMap(c.Labels), "label", "static label NAME=VALUE added to every profile (repeatable)")
	fs.Var((*ruleList)(&c.Include), "include", "profile only processes matching FIELD:REGEX, FIELD one of exe, comm, cgroup, pid (repeatable; any match includes)")
	fs.Var((*ruleList)(&c.Exclude), "exclude", "do not profile processes matching FIELD:REGEX (repeatable; wins over --include)")
	fs.Var((*serviceRuleList)(&c.ServiceRules), "service-name", "SERVICE=FIELD:REGEX: name the service of matching processes (repeatable; first match wins; default: container, then executable name)")
	fs.BoolVar(&c.DropIdle, "drop-idle", true, "do not record the idle task")
	fs.StringVar(&c.Demangle, "demangle", "full", "C++/Rust names: full, simplified or none")
	c.SymbolCache = 64 << 20
	fs.Var(bytesValue{&c.SymbolCache}, "symbol-cache-size", "bound of the symbol table cache (e.g. 64MiB)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.DropPrivileges, "drop-privileges", true, "once sampling runs, keep only CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYSLOG and CAP_CHECKPOINT_RESTORE (all threads; needs a CGO_ENABLED=0 build)")

	fs.StringVar(&c.PyroscopeURL, "pyroscope-url", "", "push profiles to this Pyroscope server or Grafana Cloud Profiles URL (empty: don't push)")
	fs.StringVar(&c.PyroscopeUser, "pyroscope-basic-auth-user", "", "basic auth user (Grafana Cloud: the stack's user id)")
	fs.StringVar(&c.PyroscopePasswordFile, "pyroscope-basic-auth-password-file", "", "file holding the basic auth password (Grafana Cloud: an access token); or set SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD")
	fs.StringVar(&c.PyroscopeTokenFile, "pyroscope-bearer-token-file", "", "file holding a bearer token; or set SCORCH_PYROSCOPE_BEARER_TOKEN")
	fs.StringVar(&c.PyroscopeTenant, "pyroscope-tenant", "", "tenant id, sent as X-Scope-OrgID")
	fs.StringVar(&c.PyroscopeCAFile, "pyroscope-ca-file", "", "PEM file of extra certificate authorities for the server")
	fs.BoolVar(&c.PyroscopeInsecure, "pyroscope-insecure-skip-verify", false, "do not verify the server's certificate (testing only)")
	fs.DurationVar(&c.PyroscopeTimeout, "pyroscope-timeout", 10*time.Second, "timeout of one push request")
	c.QueueSize = 16 << 20
	fs.Var(bytesValue{&c.QueueSize}, "queue-size", "bound of the send queue in bytes; when full the oldest window is dropped")
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
					err = fmt.Errorf("%s: %v", EnvName(f.Name), e)
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
					err = fmt.Errorf("config file key %s: %v", f.Name, e)
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

func (c *Config) validate() error {
	switch {
	case c.Frequency < 1 || c.Frequency > 100000:
		return fmt.Errorf("--frequency %d is out of range (1 to 100000 Hz)", c.Frequency)
	case c.StackMapSize < 64 || c.StackMapSize > 1<<20:
		return fmt.Errorf("--stack-map-size %d is out of range (64 to 1048576)", c.StackMapSize)
	case c.Interval < time.Second:
		return fmt.Errorf("--interval %s is too short (at least 1s)", c.Interval)
	case c.Retention <= 0:
		return fmt.Errorf("--retention must be positive")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("--log-format must be text or json")
	case c.PyroscopeToken != "" && (c.PyroscopeUser != "" || c.PyroscopePassword != ""):
		return fmt.Errorf("use either basic auth or a bearer token for Pyroscope, not both")
	}
	switch c.Demangle {
	case "full", "simplified", "none":
	default:
		return fmt.Errorf("--demangle must be full, simplified or none")
	}
	return nil
}
