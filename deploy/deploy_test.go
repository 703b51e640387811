// Package deploy holds the deployment packaging of the Scorch agent
// (Kubernetes manifests, systemd unit) and the tests that keep them
// consistent: every manifest parses, the fields the agent depends on are
// set, the systemd unit passes systemd-analyze, and the capability set
// they grant is the one capcheck shows to be sufficient.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// minimalCaps is the capability set every manifest grants instead of full
// privileges, without the CAP_ prefix. caps_test.go checks it is enough
// and that each member is needed.
var minimalCaps = []string{"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYSLOG", "CHECKPOINT_RESTORE"}

// manifests parses every YAML document under kubernetes/ into generic
// maps, keyed by "Kind/name".
func manifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	out := make(map[string]map[string]any)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := doc["kind"].(string)
			name, _ := get(doc, "metadata", "name").(string)
			if kind == "" {
				t.Fatalf("%s: document without kind", f)
			}
			if kind != "Kustomization" && name == "" {
				t.Fatalf("%s: %s without metadata.name", f, kind)
			}
			out[kind+"/"+name] = doc
		}
	}
	return out
}

// get walks a path of map keys and list indexes (int) through a decoded
// YAML document, returning nil where the path does not exist.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// find returns the element of list v whose "name" is name.
func find(v any, name string) map[string]any {
	l, _ := v.([]any)
	for _, e := range l {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	docs := manifests(t)
	k := docs["Kustomization/"]
	if k == nil {
		t.Fatal("kustomization.yaml missing")
	}
	var listed []string
	for _, r := range get(k, "resources").([]any) {
		listed = append(listed, r.(string))
		if _, err := os.Stat(filepath.Join("kubernetes", r.(string))); err != nil {
			t.Errorf("kustomization lists %s: %v", r, err)
		}
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
			t.Errorf("%s is not listed in kustomization.yaml resources", b)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	docs := manifests(t)
	ds := docs["DaemonSet/scorch"]
	if ds == nil {
		t.Fatal("no DaemonSet/scorch")
	}
	if docs["Namespace/scorch"] == nil || docs["ServiceAccount/scorch"] == nil {
		t.Error("Namespace/scorch or ServiceAccount/scorch missing")
	}
	pod := get(ds, "spec", "template", "spec")
	if get(pod, "hostPID") != true {
		t.Error("hostPID is not true: the agent would only see its own pod's processes")
	}
	if get(pod, "serviceAccountName") != "scorch" {
		t.Error("serviceAccountName is not scorch")
	}
	if get(pod, "tolerations", 0, "operator") != "Exists" || get(pod, "tolerations", 0, "key") != nil {
		t.Error("no catch-all toleration (operator: Exists): tainted nodes would go unprofiled")
	}
	sel := get(ds, "spec", "selector", "matchLabels", "app.kubernetes.io/name")
	if sel == nil || sel != get(ds, "spec", "template", "metadata", "labels", "app.kubernetes.io/name") {
		t.Error("selector does not match the pod template labels")
	}

	c := find(get(pod, "containers"), "scorch")
	if c == nil {
		t.Fatal("no container named scorch")
	}
	args := strings.Join(toStrings(c["args"]), " ")
	for _, want := range []string{"agent", "--listen=$(POD_IP):7070", "--label=node=$(NODE_NAME)", "--data-dir=/var/lib/scorch"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	env := c["env"]
	for name, field := range map[string]string{"NODE_NAME": "spec.nodeName", "POD_IP": "status.podIP"} {
		if got := get(find(env, name), "valueFrom", "fieldRef", "fieldPath"); got != field {
			t.Errorf("env %s from %v, want downward API %s", name, got, field)
		}
	}
	for name, key := range map[string]string{"SCORCH_PYROSCOPE_URL": "url", "SCORCH_PYROSCOPE_BASIC_AUTH_USER": "username"} {
		ref := get(find(env, name), "valueFrom", "secretKeyRef")
		if get(ref, "name") != "scorch-pyroscope" || get(ref, "key") != key {
			t.Errorf("env %s: secretKeyRef %v, want scorch-pyroscope/%s", name, ref, key)
		}
	}
	// The password comes from a mounted Secret file, never an env value.
	if find(env, "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD") != nil {
		t.Error("password passed as an environment variable")
	}
	pwFile, _ := get(find(env, "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD_FILE"), "value").(string)
	pwVol := find(get(pod, "volumes"), "pyroscope-credentials")
	pwMount := find(c["volumeMounts"], "pyroscope-credentials")
	if pwVol == nil || get(pwVol, "secret", "secretName") != "scorch-pyroscope" || pwMount == nil ||
		pwFile != get(pwMount, "mountPath").(string)+"/"+get(pwVol, "secret", "items", 0, "path").(string) {
		t.Errorf("password file %q is not the scorch-pyroscope secret mount", pwFile)
	}

	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		h := get(c, probe, "httpGet")
		if get(h, "path") != "/healthz" || get(h, "port") != "http" {
			t.Errorf("%s: httpGet %v, want /healthz on port http", probe, h)
		}
	}
	if p := find(c["ports"], "http"); p == nil || p["containerPort"] != 7070 {
		t.Errorf("port http = %v, want containerPort 7070 (matching --listen)", p)
	}

	res := map[string]string{
		"requests.cpu": "20m", "requests.memory": "256Mi",
		"limits.cpu": "200m", "limits.memory": "512Mi",
	}
	for k, want := range res {
		a, b, _ := strings.Cut(k, ".")
		if got := get(c, "resources", a, b); got != want {
			t.Errorf("resources.%s = %v, want %s", k, got, want)
		}
	}
	if get(c, "securityContext", "privileged") != true {
		t.Error("container is not privileged")
	}

	// Host paths the agent reads, mounted at the same path in the pod.
	mounts := map[string]bool{"/sys/kernel/btf": true, "/sys/fs/cgroup": true, "/run/containerd": true, "/var/lib/scorch": false}
	for path, ro := range mounts {
		var found bool
		for _, v := range get(pod, "volumes").([]any) {
			if get(v, "hostPath", "path") != path {
				continue
			}
			m := find(c["volumeMounts"], get(v, "name").(string))
			if m == nil || m["mountPath"] != path {
				t.Errorf("hostPath %s not mounted at %s: %v", path, path, m)
				continue
			}
			if got := m["readOnly"] == true; got != ro {
				t.Errorf("hostPath %s readOnly = %v, want %v", path, got, ro)
			}
			found = true
		}
		if !found {
			t.Errorf("no hostPath volume for %s", path)
		}
	}
}

// TestDaemonSetDocumentsMinimalCaps keeps the commented alternative in the
// DaemonSet in step with minimalCaps.
func TestDaemonSetDocumentsMinimalCaps(t *testing.T) {
	data, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := "add: [" + strings.Join(minimalCaps, ", ") + "]"
	if !bytes.Contains(data, []byte(want)) {
		t.Errorf("daemonset.yaml does not document %q", want)
	}
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// unitFile parses a systemd unit into section -> key -> values.
func unitFile(t *testing.T, name string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make(map[string]map[string][]string)
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = make(map[string][]string)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", name, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := unitFile(t, "systemd/scorch.service")
	s := u["Service"]
	want := map[string]string{
		"ExecStart":               "/usr/local/bin/scorch agent",
		"EnvironmentFile":         "-/etc/scorch/scorch.env",
		"ProtectSystem":           "strict",
		"ReadWritePaths":          "/var/lib/scorch",
		"ProtectHome":             "read-only",
		"NoNewPrivileges":         "yes",
		"LockPersonality":         "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"Restart":                 "on-failure",
		// /proc/kallsyms must stay readable.
		"ProtectKernelTunables": "no",
	}
	for k, v := range want {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	if len(s["MemoryMax"]) != 1 {
		t.Error("no MemoryMax")
	}
	if slices.Contains(s["ProtectProc"], "invisible") || slices.Contains(s["ProcSubset"], "pid") {
		t.Error("ProtectProc/ProcSubset hide other processes from the agent")
	}
	var caps []string
	for _, c := range minimalCaps {
		caps = append(caps, "CAP_"+c)
	}
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got := s[k]; len(got) != 1 || got[0] != strings.Join(caps, " ") {
			t.Errorf("[Service] %s = %q, want %q", k, got, strings.Join(caps, " "))
		}
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q", got)
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the unit, with
// ExecStart pointed at an existing binary (the agent is not installed on
// the test machine).
func TestSystemdAnalyzeVerify(t *testing.T) {
	tool := testenv.RequireTool(t, "systemd-analyze")
	data, err := os.ReadFile("systemd/scorch.service")
	if err != nil {
		t.Fatal(err)
	}
	stub, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("ExecStart=/usr/local/bin/scorch"), []byte("ExecStart="+stub), 1)
	unit := filepath.Join(t.TempDir(), "scorch.service")
	if err := os.WriteFile(unit, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", unit).CombinedOutput()
	// verify exits 0 on success; any message is a warning worth fixing
	// (unknown keys, bad values).
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestEnvExample(t *testing.T) {
	data, err := os.ReadFile("systemd/scorch.env.example")
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "#")
		if k, _, ok := strings.Cut(line, "="); ok && !strings.Contains(k, " ") && !strings.HasPrefix(k, "SCORCH_") {
			t.Errorf("scorch.env.example:%d: %s is not a SCORCH_ variable", n+1, k)
		}
	}
	for _, k := range []string{"SCORCH_PYROSCOPE_URL=", "SCORCH_PYROSCOPE_BASIC_AUTH_USER=", "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD_FILE=", "SCORCH_LISTEN=", "SCORCH_DATA_DIR="} {
		if !bytes.Contains(data, []byte(k)) {
			t.Errorf("scorch.env.example lacks %s", k)
		}
	}
}
