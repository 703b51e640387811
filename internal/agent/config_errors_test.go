package agent

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// applyConfig parses args, then the environment env and the file holding
// yaml (if not empty), as `scorch agent` does.
func applyConfig(t *testing.T, args []string, env map[string]string, yaml string) (*Config, error) {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	file := ""
	if yaml != "" {
		file = filepath.Join(t.TempDir(), "scorch.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &c, c.ApplyEnvAndFile(fs, file, func(k string) string { return env[k] })
}

// TestConfigErrorsNameValueAndForm: a bad value says where it came from,
// what it was and what form it should take.
func TestConfigErrorsNameValueAndForm(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		yaml string
		want []string
	}{
		{[]string{"--interval", "bogus"}, nil, "", []string{`"bogus"`, "-interval", "want a duration such as 15s"}},
		{[]string{"--frequency=9x"}, nil, "", []string{`"9x"`, "-frequency", "want a whole number"}},
		{[]string{"--drop-idle=perhaps"}, nil, "", []string{`"perhaps"`, "want true or false"}},
		{nil, map[string]string{"SCORCH_INTERVAL": "bogus"}, "", []string{`SCORCH_INTERVAL="bogus"`, "want a duration such as 15s"}},
		{nil, map[string]string{"SCORCH_DROP_PRIVILEGES": "sure"}, "", []string{`SCORCH_DROP_PRIVILEGES="sure"`, "want true or false"}},
		{nil, nil, "interval: bogus\n", []string{"scorch.yaml", `interval="bogus"`, "want a duration such as 15s"}},
		{nil, nil, "stack-map-size: big\n", []string{`stack-map-size="big"`, "want a whole number"}},
		{[]string{"--pyroscope-timeout", "-1s"}, nil, "", []string{"--pyroscope-timeout -1s", "want a positive duration"}},
		{[]string{"--queue-size", "0"}, nil, "", []string{"--queue-size 0", "want a positive size"}},
		{[]string{"--log-format", "xml"}, nil, "", []string{`--log-format "xml"`, "want text or json"}},
	} {
		_, err := applyConfig(t, tc.args, tc.env, tc.yaml)
		if err == nil {
			t.Errorf("%v %v %q: accepted", tc.args, tc.env, tc.yaml)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v %q: error %q does not say %q", tc.args, tc.env, tc.yaml, err, w)
			}
		}
	}
}

// TestConfigSecretKeys: a secret in the file is refused with the flag of
// the file that should hold it, and without echoing it.
func TestConfigSecretKeys(t *testing.T) {
	for key, want := range map[string]string{
		"pyroscope-basic-auth-password": "pyroscope-basic-auth-password-file",
		"password":                      "pyroscope-basic-auth-password-file",
		"pyroscope-bearer-token":        "pyroscope-bearer-token-file",
	} {
		_, err := applyConfig(t, nil, nil, key+": hunter2\n")
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v", key, err)
		}
	}
}

// TestConfigNoOutput: no store, no listener and no Pyroscope URL is
// refused unless --allow-no-output; any one of the three is enough.
func TestConfigNoOutput(t *testing.T) {
	none := []string{"--data-dir", "", "--listen", ""}
	if _, err := applyConfig(t, none, nil, ""); !errors.Is(err, ErrNoOutput) {
		t.Errorf("nothing kept: %v", err)
	}
	for _, extra := range [][]string{{"--allow-no-output"}, {"--data-dir", "/x"}, {"--listen", "127.0.0.1:0"}, {"--pyroscope-url", "http://p"}} {
		if _, err := applyConfig(t, append(append([]string{}, none...), extra...), nil, ""); err != nil {
			t.Errorf("%v: %v", extra, err)
		}
	}
	if _, err := applyConfig(t, none, map[string]string{"SCORCH_PYROSCOPE_URL": "http://p"}, ""); err != nil {
		t.Errorf("URL from the environment: %v", err)
	}
}
