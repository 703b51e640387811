package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Trimmed copies of real state files.
const (
	containerdConfig = `{"ociVersion":"1.1.0","process":{"env":["PATH=/usr/bin"]},
"annotations":{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.container-type":"container",
"io.kubernetes.cri.image-name":"docker.io/library/nginx:1.27","io.kubernetes.cri.sandbox-id":"` + id2 + `",
"io.kubernetes.cri.sandbox-name":"web-7c9f8d-x2x4k","io.kubernetes.cri.sandbox-namespace":"shop",
"io.kubernetes.cri.sandbox-uid":"` + uid + `"}}`
	crioConfig = `{"ociVersion":"1.0.2-dev","annotations":{
"io.kubernetes.cri-o.ContainerName":"k8s_db_postgres-0_data_` + uid + `_0",
"io.kubernetes.container.name":"db","io.kubernetes.pod.name":"postgres-0",
"io.kubernetes.pod.namespace":"data","io.kubernetes.cri-o.SandboxID":"` + id2 + `"}}`
	dockerConfig     = `{"ID":"` + id1 + `","Name":"/redis-cache","Config":{"Image":"redis:7","Labels":{"com.docker.compose.service":"cache"}}}`
	dockershimConfig = `{"ID":"` + id1 + `","Name":"/k8s_api_api-5d9_prod_` + uid + `_0","Config":{"Labels":{
"io.kubernetes.container.name":"api","io.kubernetes.pod.name":"api-5d9","io.kubernetes.pod.namespace":"prod"}}}`
)

func TestResolverStateFiles(t *testing.T) {
	tests := []struct {
		name string
		file string // relative to the host root
		data string
		info Info
		want Names
	}{
		{"containerd k8s.io", "run/containerd/io.containerd.runtime.v2.task/k8s.io/" + id1 + "/config.json", containerdConfig,
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid},
			Names{Container: "app", Pod: "web-7c9f8d-x2x4k", Namespace: "shop", Runtime: RuntimeContainerd}},
		{"containerd, runtime unknown from path", "run/containerd/io.containerd.runtime.v2.task/k8s.io/" + id1 + "/config.json", containerdConfig,
			Info{ContainerID: id1, PodUID: uid},
			Names{Container: "app", Pod: "web-7c9f8d-x2x4k", Namespace: "shop", Runtime: RuntimeContainerd}},
		{"k3s containerd", "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/" + id1 + "/config.json", containerdConfig,
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid},
			Names{Container: "app", Pod: "web-7c9f8d-x2x4k", Namespace: "shop", Runtime: RuntimeContainerd}},
		{"cri-o", "run/containers/storage/overlay-containers/" + id1 + "/userdata/config.json", crioConfig,
			Info{ContainerID: id1, Runtime: RuntimeCRIO, PodUID: uid},
			Names{Container: "db", Pod: "postgres-0", Namespace: "data", Runtime: RuntimeCRIO}},
		{"docker", "var/lib/docker/containers/" + id1 + "/config.v2.json", dockerConfig,
			Info{ContainerID: id1, Runtime: RuntimeDocker},
			Names{Container: "redis-cache", Runtime: RuntimeDocker}},
		{"dockershim", "var/lib/docker/containers/" + id1 + "/config.v2.json", dockershimConfig,
			Info{ContainerID: id1, PodUID: uid},
			Names{Container: "api", Pod: "api-5d9", Namespace: "prod", Runtime: RuntimeDocker}},
		{"no state file", "unrelated", "",
			Info{ContainerID: id1, Runtime: RuntimeDocker},
			Names{}},
		{"malformed state file", "var/lib/docker/containers/" + id1 + "/config.v2.json", `{"Name": 42`,
			Info{ContainerID: id1, Runtime: RuntimeDocker},
			Names{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, tt.file), tt.data)
			r := NewResolver(ResolverOptions{HostRoot: root, ProcRoot: filepath.Join(root, "proc")})
			if got := r.Names(1, tt.info); got != tt.want {
				t.Errorf("Names = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolverEnvironFallback(t *testing.T) {
	root := t.TempDir()
	env := "PATH=/bin\x00POD_NAME=worker-1\x00POD_NAMESPACE=batch\x00HOSTNAME=worker-1\x00"
	writeFile(t, filepath.Join(root, "proc/77/environ"), env)
	r := NewResolver(ResolverOptions{HostRoot: root, ProcRoot: filepath.Join(root, "proc")})
	want := Names{Pod: "worker-1", Namespace: "batch"}
	if got := r.Names(77, Info{ContainerID: id1, PodUID: uid}); got != want {
		t.Errorf("Names(pod container without state) = %+v, want %+v", got, want)
	}
	if got := r.Names(77, Info{PodUID: uid}); got != want {
		t.Errorf("Names(pod without container) = %+v, want %+v", got, want)
	}
	// A process outside any pod gets nothing from its environment.
	if got := r.Names(77, Info{ContainerID: id2}); got != (Names{}) {
		t.Errorf("Names(non-pod container) = %+v, want zero", got)
	}
	if got := r.Names(77, Info{Unit: "cron.service"}); got != (Names{}) {
		t.Errorf("Names(host process) = %+v, want zero", got)
	}
}

// TestResolverCache checks the bound, the LRU order and that names not
// found are looked up again after the negative TTL.
func TestResolverCache(t *testing.T) {
	root := t.TempDir()
	now := time.Unix(1000, 0)
	r := NewResolver(ResolverOptions{HostRoot: root, ProcRoot: filepath.Join(root, "proc"), CacheSize: 3, NegativeTTL: time.Minute})
	r.now = func() time.Time { return now }

	ids := make([]string, 5)
	for i := range ids {
		ids[i] = strings.Repeat(strconv.Itoa(i), 64)
		writeFile(t, filepath.Join(root, "var/lib/docker/containers", ids[i], "config.v2.json"),
			`{"Name":"/c`+strconv.Itoa(i)+`"}`)
	}
	for _, id := range ids {
		if got := r.Names(1, Info{ContainerID: id, Runtime: RuntimeDocker}); got.Container == "" {
			t.Fatalf("no name for %s", id)
		}
	}
	if n := len(r.byID); n != 3 || r.lru.Len() != 3 {
		t.Fatalf("cache holds %d/%d entries, want 3", n, r.lru.Len())
	}
	if s := r.Stats(); s.Misses != 5 || s.Evictions != 2 || s.Hits != 0 {
		t.Errorf("stats = %+v, want 5 misses, 2 evictions", s)
	}
	// The newest entries survive; a hit must not touch the file system.
	os.RemoveAll(filepath.Join(root, "var"))
	if got := r.Names(1, Info{ContainerID: ids[4], Runtime: RuntimeDocker}); got.Container != "c4" {
		t.Errorf("cached Names = %+v, want c4", got)
	}
	if got := r.Names(1, Info{ContainerID: ids[0], Runtime: RuntimeDocker}); got.Container != "" {
		t.Errorf("evicted entry still resolved: %+v", got)
	}

	// Negative entry: cached until the TTL passes, then retried.
	late := strings.Repeat("a", 64)
	if got := r.Names(1, Info{ContainerID: late, Runtime: RuntimeDocker}); got != (Names{}) {
		t.Fatalf("Names before the state file exists = %+v", got)
	}
	writeFile(t, filepath.Join(root, "var/lib/docker/containers", late, "config.v2.json"), `{"Name":"/late"}`)
	if got := r.Names(1, Info{ContainerID: late, Runtime: RuntimeDocker}); got != (Names{}) {
		t.Errorf("negative entry not cached: %+v", got)
	}
	now = now.Add(2 * time.Minute)
	if got := r.Names(1, Info{ContainerID: late, Runtime: RuntimeDocker}); got.Container != "late" {
		t.Errorf("Names after the TTL = %+v, want late", got)
	}
	r.Forget(late)
	if _, ok := r.byID[late]; ok {
		t.Error("Forget left the entry")
	}
}

func TestResolverStateFileTooLarge(t *testing.T) {
	root := t.TempDir()
	big := `{"Name":"/big","Config":{"Labels":{"x":"` + strings.Repeat("y", maxStateFile) + `"}}}`
	writeFile(t, filepath.Join(root, "var/lib/docker/containers", id1, "config.v2.json"), big)
	r := NewResolver(ResolverOptions{HostRoot: root})
	if got := r.Names(1, Info{ContainerID: id1, Runtime: RuntimeDocker}); got != (Names{}) {
		t.Errorf("Names from an oversized file = %+v, want zero", got)
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"web-0", "web-0"},
		{"a\nb", "a\uFFFDb"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{strings.Repeat("x", 300), strings.Repeat("x", maxNameLen)},
		{strings.Repeat("é", 200), strings.Repeat("é", maxNameLen/2)},
	}
	for _, tt := range tests {
		if got := cleanName(tt.in); got != tt.want {
			t.Errorf("cleanName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func checkNames(t *testing.T, n Names) {
	for _, s := range []string{n.Pod, n.Namespace, n.Container} {
		if len(s) > maxNameLen || !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\n\r") {
			t.Errorf("unsafe name %q", s)
		}
	}
}

func FuzzParseOCIConfig(f *testing.F) {
	f.Add([]byte(containerdConfig))
	f.Add([]byte(crioConfig))
	f.Add([]byte(`{"annotations":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseOCIConfig(data)
		if err != nil && n != (Names{}) {
			t.Errorf("names %+v with error %v", n, err)
		}
		checkNames(t, n)
	})
}

func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(dockerConfig))
	f.Add([]byte(dockershimConfig))
	f.Add([]byte(`{"Name":"/\u0000"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseDockerConfig(data)
		if err != nil && n != (Names{}) {
			t.Errorf("names %+v with error %v", n, err)
		}
		checkNames(t, n)
	})
}

func FuzzParseEnviron(f *testing.F) {
	f.Add([]byte("POD_NAME=a\x00POD_NAMESPACE=b\x00"))
	f.Add([]byte("=\x00POD_NAME\x00POD_NAME==\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkNames(t, parseEnviron(data))
	})
}
