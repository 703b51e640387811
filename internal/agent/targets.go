package agent

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/process"
)

// target is where a process's samples go: one profile per window per
// distinct label set. A target is a service: its name and the labels that
// stay while it runs (host, container, pod, namespace, unit, static
// labels); the processes of a service share it, and their pid, tid and
// thread name are sample labels inside its profile (exporter.Builder), so
// that a host starting thousands of short-lived processes has as many
// targets as services. Config.PidSeries adds the pid to the labels.
type target struct {
	key      string            // the labels, serialized: identifies the target
	labels   map[string]string // service_name, hostname, container_id, ...; shared, read-only
	excluded bool              // by --include/--exclude
}

// targets finds the target of each process and remembers it until the
// process exits. It is safe for concurrent use.
type targets struct {
	cfg        *Config
	procRoot   string
	hostname   string
	containers *container.Resolver
	cgroups    *container.InfoCache

	// exe, when set, gives the executable's path the symbolizer read with
	// the process's maps just before (one readlink fewer per process).
	exe func(pid uint32) (string, bool)

	mu    sync.Mutex
	cache map[uint32]*target
}

// maxCachedProcs bounds the process cache; past it the cache is emptied
// (entries are cheap to rebuild from /proc).
const maxCachedProcs = 1 << 16

func newTargets(cfg *Config, procRoot string) *targets {
	host, _ := os.Hostname()
	return &targets{
		cfg:        cfg,
		procRoot:   procRoot,
		hostname:   host,
		containers: container.NewResolver(container.ResolverOptions{ProcRoot: procRoot}),
		cgroups:    container.NewInfoCache(procRoot),
		cache:      map[uint32]*target{},
	}
}

// forget drops what is known of an exited process.
func (t *targets) forget(pid uint32) {
	t.mu.Lock()
	delete(t.cache, pid)
	t.mu.Unlock()
}

// prewarm resolves the target of pid while the process is alive, if not
// known yet: a short-lived process is often gone by the drain that carries
// its samples, and then neither its executable nor its cgroup can be read.
// comm and cgroupID are what the kernel said of it ("" and 0 unknown).
func (t *targets) prewarm(pid uint32, comm string, cgroupID uint64) {
	t.mu.Lock()
	_, ok := t.cache[pid]
	t.mu.Unlock()
	if ok || pid == 0 {
		return
	}
	if comm == "" {
		b, err := process.ReadProcFile(filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10), "comm"), 0)
		if err != nil {
			return // gone already: lookup falls back to the sample's comm
		}
		comm = strings.TrimSuffix(string(b), "\n")
	}
	t.lookup(pid, comm, cgroupID)
}

func (t *targets) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cache)
}

// lookup returns the target of process pid, whose kernel name is comm and
// cgroup v2 id cgroupID (0 unknown).
func (t *targets) lookup(pid uint32, comm string, cgroupID uint64) *target {
	t.mu.Lock()
	tg, ok := t.cache[pid]
	t.mu.Unlock()
	if ok {
		return tg
	}
	tg = t.build(pid, comm, cgroupID)
	t.mu.Lock()
	if len(t.cache) >= maxCachedProcs {
		clear(t.cache)
	}
	t.cache[pid] = tg
	t.mu.Unlock()
	return tg
}

func (t *targets) build(pid uint32, comm string, cgroupID uint64) *target {
	exe, gone := "", false
	if pid != 0 {
		dir := filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10))
		var err error
		var ok bool
		if t.exe != nil {
			exe, ok = t.exe(pid)
		}
		if !ok {
			exe, err = os.Readlink(filepath.Join(dir, "exe"))
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if err != nil {
			// Kernel threads have no executable; nor has a process
			// that exited: a zombie (its parent has not reaped it
			// yet), or one whose /proc directory is gone.
			gone = !process.KernelThread(dir)
		}
	}
	var info container.Info
	if pid != 0 {
		info, _ = t.cgroups.Lookup(pid, cgroupID)
	}
	fields := map[string]string{
		"exe":    exe,
		"comm":   comm,
		"cgroup": info.Path,
		"pid":    strconv.FormatUint(uint64(pid), 10),
	}
	tg := &target{labels: map[string]string{}}
	if len(t.cfg.Include) > 0 && !matchAny(t.cfg.Include, fields) {
		tg.excluded = true
	}
	if matchAny(t.cfg.Exclude, fields) {
		tg.excluded = true
	}
	if tg.excluded {
		return tg
	}

	var names container.Names
	if info.ContainerID != "" {
		names = t.containers.Names(pid, info)
	}
	service := ""
	for _, r := range t.cfg.ServiceRules {
		if r.Re.MatchString(fields[r.Field]) {
			service = r.Service
			break
		}
	}
	switch {
	case service != "":
	case names.Namespace != "" && names.Container != "":
		service = names.Namespace + "/" + names.Container
	case names.Container != "":
		service = names.Container
	case info.ContainerID != "":
		service = "container-" + info.ContainerID[:12]
	case exe != "":
		service = filepath.Base(exe)
	case pid == 0:
		service = "idle"
	case gone && comm != "":
		service = comm // exited before we could read its executable
	default:
		service = "kernel" // kernel threads have no executable
	}

	for k, v := range t.cfg.Labels {
		tg.labels[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			tg.labels[k] = v
		}
	}
	set("service_name", service)
	set("hostname", t.hostname)
	if t.cfg.PidSeries {
		set("pid", fields["pid"])
	}
	set("container_id", info.ContainerID)
	set("pod", names.Pod)
	set("namespace", names.Namespace)
	set("container", names.Container)
	set("pod_uid", info.PodUID)
	set("systemd_unit", info.Unit)
	tg.key = labelKey(tg.labels)
	return tg
}

func matchAny(rules []Rule, fields map[string]string) bool {
	for _, r := range rules {
		if r.Re.MatchString(fields[r.Field]) {
			return true
		}
	}
	return false
}

func labelKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}
