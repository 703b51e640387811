package container

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Names are the human-readable names of a container, read from the
// container runtime's state files or, failing that, from the process's
// environment. Any field may be empty.
type Names struct {
	// Container is the container's name: the Kubernetes container name
	// for pods, the docker container name (without the leading "/")
	// otherwise.
	Container string
	// Pod and Namespace are the Kubernetes pod name and namespace.
	Pod       string
	Namespace string
	// Runtime is the runtime whose state file supplied the names; it
	// fills in Info.Runtime when the cgroup path did not say.
	Runtime Runtime
}

// Resolver finds the Names of containers and remembers them in a bounded
// cache keyed by container id. It is safe for concurrent use.
//
// Sources, in order:
//
//  1. The runtime's state file for the container id, below HostRoot:
//     containerd's OCI bundle
//     run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json
//     (also k3s's run/k3s/containerd/...; annotations
//     io.kubernetes.cri.sandbox-name, -namespace, container-name),
//     CRI-O's run/containers/storage/overlay-containers/<id>/userdata/config.json
//     (annotations io.kubernetes.pod.name, .pod.namespace, .container.name)
//     and docker's var/lib/docker/containers/<id>/config.v2.json (Name and
//     the io.kubernetes.* labels dockershim set).
//  2. The POD_NAME and POD_NAMESPACE environment variables of the
//     process (set by many charts through the downward API), read from
//     ProcRoot/PID/environ. This reads one process's view, so it is used
//     only when no state file names the pod.
//
// The kubelet's API and the CRI socket would be authoritative but need
// credentials and a client; the state files are what the runtime itself
// wrote when it created the container, and exist for the container's
// whole life. A container whose files cannot be read (another runtime
// root, rootless runtimes under a user's home) keeps its id and pod UID,
// which Info always provides.
type Resolver struct {
	hostRoot string
	procRoot string
	max      int
	negTTL   time.Duration
	now      func() time.Time

	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, most recent first
	byID  map[string]*list.Element
	stats ResolverStats
}

// ResolverStats counts cache outcomes, for the agent's metrics.
type ResolverStats struct {
	Hits, Misses, Evictions uint64
}

type cacheEntry struct {
	id      string
	names   Names
	found   bool
	expires time.Time // for entries that found nothing
}

// ResolverOptions configures NewResolver. Zero values select the defaults.
type ResolverOptions struct {
	// HostRoot is where the host's file system is visible: "/" (default)
	// for an agent on the host, "/host" for one in a container with the
	// host's / mounted there. Only the runtime state directories listed on
	// Resolver are read below it.
	HostRoot string
	// ProcRoot is the host's /proc (default "/proc").
	ProcRoot string
	// CacheSize bounds the number of containers remembered (default 4096).
	CacheSize int
	// NegativeTTL is how long a container whose names were not found is
	// remembered before its files are read again (default 30s).
	NegativeTTL time.Duration
}

// NewResolver returns a Resolver configured by opts.
func NewResolver(opts ResolverOptions) *Resolver {
	r := &Resolver{
		hostRoot: opts.HostRoot,
		procRoot: opts.ProcRoot,
		max:      opts.CacheSize,
		negTTL:   opts.NegativeTTL,
		now:      time.Now,
		lru:      list.New(),
		byID:     make(map[string]*list.Element),
	}
	if r.hostRoot == "" {
		r.hostRoot = "/"
	}
	if r.procRoot == "" {
		r.procRoot = "/proc"
	}
	if r.max <= 0 {
		r.max = 4096
	}
	if r.negTTL <= 0 {
		r.negTTL = 30 * time.Second
	}
	return r
}

// Names returns the names of the container that info (from Lookup of
// pid) identifies. It returns the zero Names for a process that is not in
// a container. Failures to read a source are not errors: the names are
// best effort, and a missing name is an empty field.
func (r *Resolver) Names(pid uint32, info Info) Names {
	if info.ContainerID == "" {
		if info.PodUID == "" {
			return Names{}
		}
		return r.fromEnviron(pid)
	}

	r.mu.Lock()
	if el, ok := r.byID[info.ContainerID]; ok {
		e := el.Value.(*cacheEntry)
		if e.found || r.now().Before(e.expires) {
			r.lru.MoveToFront(el)
			r.stats.Hits++
			n := e.names
			r.mu.Unlock()
			return n
		}
	}
	r.stats.Misses++
	r.mu.Unlock()

	// Read outside the lock: two goroutines may read the same files
	// concurrently, which is harmless.
	n, found := r.fromState(info)
	if n.Pod == "" && info.PodUID != "" {
		env := r.fromEnviron(pid)
		n.Pod, n.Namespace = env.Pod, env.Namespace
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	e := &cacheEntry{id: info.ContainerID, names: n, found: found, expires: r.now().Add(r.negTTL)}
	if el, ok := r.byID[info.ContainerID]; ok {
		el.Value = e
		r.lru.MoveToFront(el)
		return n
	}
	r.byID[info.ContainerID] = r.lru.PushFront(e)
	for r.lru.Len() > r.max {
		last := r.lru.Back()
		r.lru.Remove(last)
		delete(r.byID, last.Value.(*cacheEntry).id)
		r.stats.Evictions++
	}
	return n
}

// Forget drops a container from the cache, for example when the agent
// learns that it exited.
func (r *Resolver) Forget(containerID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.byID[containerID]; ok {
		r.lru.Remove(el)
		delete(r.byID, containerID)
	}
}

// Stats returns the cache counters.
func (r *Resolver) Stats() ResolverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Size caps for the files the resolver reads. OCI bundles carry the whole
// environment and mount list of a container; a few MiB is generous.
const (
	maxStateFile = 4 << 20
	maxEnviron   = 1 << 20
	maxNameLen   = 253 // a DNS subdomain, the longest Kubernetes name
)

// containerdRoots are containerd's runtime-v2 state directories (upstream
// and k3s/rke2), relative to HostRoot.
var containerdRoots = []string{
	"run/containerd/io.containerd.runtime.v2.task",
	"run/k3s/containerd/io.containerd.runtime.v2.task",
}

// containerdNamespaces are the containerd namespaces to try: the CRI
// plugin's, docker's (moby) and the default one (nerdctl, ctr).
var containerdNamespaces = []string{"k8s.io", "moby", "default"}

// fromState reads the state file of the container's runtime, or of every
// runtime if the cgroup path did not name one.
func (r *Resolver) fromState(info Info) (Names, bool) {
	id := info.ContainerID
	if !isContainerID(id) {
		// Ids come from Parse, which validated them; re-check because the
		// id becomes a path component.
		return Names{}, false
	}
	try := func(rt Runtime) (Names, bool) {
		switch rt {
		case RuntimeContainerd:
			for _, root := range containerdRoots {
				for _, ns := range containerdNamespaces {
					if n, ok := r.readOCI(filepath.Join(r.hostRoot, root, ns, id, "config.json")); ok {
						n.Runtime = RuntimeContainerd
						return n, true
					}
				}
			}
		case RuntimeCRIO:
			for _, dir := range []string{"run/containers/storage", "var/lib/containers/storage"} {
				if n, ok := r.readOCI(filepath.Join(r.hostRoot, dir, "overlay-containers", id, "userdata", "config.json")); ok {
					n.Runtime = RuntimeCRIO
					return n, true
				}
			}
		case RuntimeDocker:
			if n, ok := r.readDocker(filepath.Join(r.hostRoot, "var/lib/docker/containers", id, "config.v2.json")); ok {
				n.Runtime = RuntimeDocker
				return n, true
			}
		}
		return Names{}, false
	}
	if info.Runtime != RuntimeUnknown {
		return try(info.Runtime)
	}
	for _, rt := range []Runtime{RuntimeContainerd, RuntimeCRIO, RuntimeDocker} {
		if n, ok := try(rt); ok {
			return n, true
		}
	}
	return Names{}, false
}

func (r *Resolver) readOCI(name string) (Names, bool) {
	data, err := readCapped(name, maxStateFile)
	if err != nil {
		return Names{}, false
	}
	n, err := parseOCIConfig(data)
	return n, err == nil
}

func (r *Resolver) readDocker(name string) (Names, bool) {
	data, err := readCapped(name, maxStateFile)
	if err != nil {
		return Names{}, false
	}
	n, err := parseDockerConfig(data)
	return n, err == nil
}

// Annotation and label keys carrying Kubernetes names.
const (
	// containerd's CRI plugin (OCI spec annotations).
	annCRISandboxName      = "io.kubernetes.cri.sandbox-name"
	annCRISandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	annCRIContainerName    = "io.kubernetes.cri.container-name"
	// The kubelet's container labels, which CRI-O copies into the OCI
	// spec annotations and dockershim set as docker labels.
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelContainerName = "io.kubernetes.container.name"
)

// parseOCIConfig extracts Names from an OCI runtime spec (config.json).
// A spec without Kubernetes annotations yields zero Names and no error.
func parseOCIConfig(data []byte) (Names, error) {
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return Names{}, errors.New("container: malformed OCI config.json: " + err.Error())
	}
	a := spec.Annotations
	return Names{
		Pod:       cleanName(firstNonEmpty(a[annCRISandboxName], a[labelPodName])),
		Namespace: cleanName(firstNonEmpty(a[annCRISandboxNamespace], a[labelPodNamespace])),
		Container: cleanName(firstNonEmpty(a[annCRIContainerName], a[labelContainerName])),
	}, nil
}

// parseDockerConfig extracts Names from docker's config.v2.json.
func parseDockerConfig(data []byte) (Names, error) {
	var c struct {
		Name   string
		Config struct {
			Labels map[string]string
		}
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return Names{}, errors.New("container: malformed docker config.v2.json: " + err.Error())
	}
	l := c.Config.Labels
	n := Names{
		Pod:       cleanName(l[labelPodName]),
		Namespace: cleanName(l[labelPodNamespace]),
		Container: cleanName(l[labelContainerName]),
	}
	if n.Container == "" {
		n.Container = cleanName(strings.TrimPrefix(c.Name, "/"))
	}
	return n, nil
}

// fromEnviron reads POD_NAME and POD_NAMESPACE from the process's
// environment.
func (r *Resolver) fromEnviron(pid uint32) Names {
	name := filepath.Join(r.procRoot, strconv.FormatUint(uint64(pid), 10), "environ")
	data, err := readCapped(name, maxEnviron)
	if err != nil {
		// Gone, not ours to read (needs CAP_SYS_PTRACE for other users'
		// processes) or oversized: a truncated environment could be
		// misread, so give up rather than guess.
		return Names{}
	}
	return parseEnviron(data)
}

// parseEnviron extracts POD_NAME and POD_NAMESPACE from the NUL-separated
// content of /proc/PID/environ.
func parseEnviron(data []byte) Names {
	var n Names
	for len(data) > 0 {
		var kv []byte
		kv, data, _ = bytes.Cut(data, []byte{0})
		if k, v, ok := bytes.Cut(kv, []byte{'='}); ok {
			switch string(k) {
			case "POD_NAME":
				n.Pod = cleanName(string(v))
			case "POD_NAMESPACE":
				n.Namespace = cleanName(string(v))
			}
		}
	}
	return n
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// cleanName makes an untrusted name safe to use as a label value: valid
// UTF-8 without control characters, at most maxNameLen bytes. Names that
// Kubernetes validated pass unchanged.
func cleanName(s string) string {
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
	}
	ok := utf8.ValidString(s)
	for i := 0; ok && i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			ok = false
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < 0x20 || r == 0x7f {
			r = '\uFFFD'
		}
		b.WriteRune(r)
	}
	out := b.String()
	for len(out) > maxNameLen {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	return out
}
