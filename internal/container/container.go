// Package container derives the identity of the container, Kubernetes pod
// or systemd unit that a Linux process runs in, from the process's cgroup.
//
// Every process belongs to one cgroup per hierarchy, listed in
// /proc/PID/cgroup as lines of the form
//
//	hierarchy-ID:controller-list:cgroup-path
//
// On a cgroup v2 host there is a single line "0::/path"; on a v1 or hybrid
// host there is one line per v1 hierarchy (and, on hybrid hosts, a "0::"
// line for the unified hierarchy, often just "/"). Container runtimes and
// the kubelet name the cgroups they create after the objects they manage,
// so the path carries the identity:
//
//	/system.slice/docker-<id>.scope                         docker, systemd driver
//	/docker/<id>                                            docker, cgroupfs driver
//	/kubepods/burstable/pod<uid>/<id>                       kubelet, cgroupfs driver
//	/kubepods.slice/kubepods-burstable.slice/
//	    kubepods-burstable-pod<uid_with_underscores>.slice/
//	    cri-containerd-<id>.scope                           kubelet, systemd driver
//	.../crio-<id>.scope                                     CRI-O
//	.../libpod-<id>.scope                                   podman
//	/system.slice/nginx.service                             a host service
//
// Parse and Lookup recognise these patterns component by component, so
// prefixes added by nesting (kind's /kubelet.slice, docker-in-docker,
// "/.." components when the reader is in a private cgroup namespace) and
// suffixes added by systemd inside a container (".../init.scope") do not
// hide the identity. When containers nest, the innermost one wins: it is
// the one the user started the process in.
//
// The cgroup path only carries identifiers (container id, pod UID). Human
// names (pod name, namespace, container name) live in the container
// runtime's state files; Resolver reads them, see resolver.go.
//
// Everything read here may be controlled by a container (cgroup names
// below a delegated subtree, environment variables) or written by a
// runtime we do not trust to be bug-free, so parsers never panic, reads
// are size-capped and caches are bounded.
package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/scorch-profiler/scorch/internal/process"
)

// Runtime names the container engine that created a container's cgroup.
// The values are suitable as label values.
type Runtime string

// Recognised runtimes. RuntimeUnknown is used when the path holds a
// container id whose creator cannot be told from the path alone, as with
// the kubelet's cgroupfs driver (/kubepods/.../pod<uid>/<id>), which
// containerd and the historic dockershim share.
const (
	RuntimeUnknown    Runtime = ""
	RuntimeDocker     Runtime = "docker"
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimePodman     Runtime = "podman"
)

// QoSClass is a Kubernetes pod's quality-of-service class, spelled as in
// the pod's status.qosClass.
type QoSClass string

// Kubernetes QoS classes.
const (
	QoSGuaranteed QoSClass = "Guaranteed"
	QoSBurstable  QoSClass = "Burstable"
	QoSBestEffort QoSClass = "BestEffort"
)

// Info is what a process's cgroup says about where it runs. Fields that
// the cgroup does not determine are empty.
type Info struct {
	// Path is the process's cgroup v2 path (the "0::" line), as seen from
	// the reader's cgroup namespace, or "" if the process has no v2 line
	// (a pure cgroup v1 host). It starts with "/.." when the process is
	// outside the reader's cgroup namespace; such a path cannot be joined
	// with the cgroup mount point, see CgroupID.
	Path string

	// ContainerID is the 64-hex-digit id of the innermost container.
	ContainerID string
	// Runtime is the engine that created the container, if the path says.
	Runtime Runtime

	// PodUID is the Kubernetes pod UID in its canonical form
	// (8-4-4-4-12 lowercase hex with dashes; 32 hex digits for static
	// pods, whose UID is a config hash). The systemd cgroup driver's
	// underscores are turned back into dashes.
	PodUID string
	// QoS is the pod's QoS class; set only together with PodUID.
	QoS QoSClass

	// Unit is the innermost systemd unit (".service", ".scope", ...), as
	// in "nginx.service", "session-3.scope" or "docker-<id>.scope".
	Unit string
	// Slice is the innermost systemd slice, as in "system.slice".
	Slice string
}

// Parse extracts an Info from the content of a /proc/PID/cgroup file.
// Malformed lines are ignored; Parse never fails, it returns the zero
// Info (plus Path) when nothing is recognised.
//
// The v2 line is consulted first. On v1 and hybrid hosts, where the v2
// line may be just "/", the v1 lines are consulted next, the
// "name=systemd" hierarchy first. The first path naming a container or
// pod wins; failing that, the first path other than "/" supplies Unit and
// Slice.
func Parse(content string) Info {
	var (
		v2      string
		hasV2   bool
		systemd string
		v1      []string
	)
	for line := range strings.SplitSeq(content, "\n") {
		hier, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			continue
		}
		switch {
		case hier == "0" && controllers == "":
			if !hasV2 {
				v2, hasV2 = path, true
			}
		case controllers == "name=systemd":
			if systemd == "" {
				systemd = path
			}
		default:
			if len(v1) < maxV1Lines {
				v1 = append(v1, path)
			}
		}
	}

	candidates := make([]string, 0, 2+len(v1))
	if hasV2 {
		candidates = append(candidates, v2)
	}
	if systemd != "" {
		candidates = append(candidates, systemd)
	}
	candidates = append(candidates, v1...)

	var best Info
	found := false
	for _, p := range candidates {
		info := parsePath(p)
		if info.ContainerID != "" || info.PodUID != "" {
			best, found = info, true
			break
		}
		if !found && p != "/" {
			best, found = info, true
		}
	}
	best.Path = ""
	if hasV2 {
		best.Path = v2
	}
	return best
}

// maxV1Lines bounds the work Parse does on hostile input; real hosts have
// at most a dozen or so v1 hierarchies.
const maxV1Lines = 32

// maxCgroupFile caps how much of /proc/PID/cgroup Lookup reads. Paths are
// limited by PATH_MAX per hierarchy; 64 KiB is far beyond any real file.
const maxCgroupFile = 64 << 10

// Lookup reads and parses procRoot/PID/cgroup. procRoot is normally
// "/proc"; an agent in a container with the host's /proc mounted elsewhere
// passes that mount point.
func Lookup(procRoot string, pid uint32) (Info, error) {
	data, err := readCgroupFile(procRoot, pid)
	if err != nil {
		return Info{}, err
	}
	return Parse(string(data)), nil
}

func readCgroupFile(procRoot string, pid uint32) ([]byte, error) {
	return process.ReadProcFile(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "cgroup"), maxCgroupFile)
}

// errTooLarge reports a file that exceeds its read cap.
var errTooLarge = errors.New("file exceeds size limit")

// readCapped reads at most limit bytes of the named file and fails with
// an error wrapping errTooLarge if the file is longer.
func readCapped(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("container: reading %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("container: %s: %w (%d bytes)", name, errTooLarge, limit)
	}
	return data, nil
}

// parsePath recognises container, pod and systemd components of one
// cgroup path.
func parsePath(p string) Info {
	comps := strings.Split(strings.Trim(p, "/"), "/")
	var info Info

	// Innermost container.
	ci := len(comps)
	for i := len(comps) - 1; i >= 0; i-- {
		parent := ""
		if i > 0 {
			parent = comps[i-1]
		}
		if id, rt, uid, ok := containerComponent(comps[i], parent); ok {
			info.ContainerID, info.Runtime, ci = id, rt, i
			if uid != "" {
				// The "slice:prefix:id" form carries the pod in the
				// same component.
				info.PodUID, info.QoS = uid, qosOf(comps[i], parent)
			}
			break
		}
	}

	// The pod enclosing that container (or any pod if there is none).
	if info.PodUID == "" {
		for i := ci - 1; i >= 0; i-- {
			parent := ""
			if i > 0 {
				parent = comps[i-1]
			}
			if uid, ok := podComponent(comps[i], parent); ok {
				info.PodUID, info.QoS = uid, qosOf(comps[i], parent)
				break
			}
		}
	}

	// Innermost systemd unit and slice.
	for i := len(comps) - 1; i >= 0 && (info.Unit == "" || info.Slice == ""); i-- {
		c := comps[i]
		if info.Slice == "" && strings.HasSuffix(c, ".slice") && len(c) > len(".slice") {
			info.Slice = c
		}
		if info.Unit == "" && isUnit(c) {
			info.Unit = c
		}
	}
	return info
}

// unitSuffixes are the systemd unit types whose cgroups can hold processes.
var unitSuffixes = []string{".service", ".scope", ".socket", ".mount", ".swap"}

func isUnit(c string) bool {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(c, s) && len(c) > len(s) {
			return true
		}
	}
	return false
}

// containerPrefixes maps the prefixes runtimes put before a container id
// in a cgroup name to the runtime. The conmon monitors of CRI-O and podman
// ("crio-conmon-<id>", "libpod-conmon-<id>") are deliberately absent: they
// run on the host, outside the container.
var containerPrefixes = []struct {
	prefix  string
	runtime Runtime
}{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"nerdctl-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
}

// containerComponent reports whether c names a container. parent is the
// component above c, used to guess the runtime of a bare id. uid is set
// when c is in the "slice:prefix:id" form that containerd and CRI-O
// produce when the systemd driver is configured but cgroupfs manages the
// cgroups, e.g. "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>".
func containerComponent(c, parent string) (id string, rt Runtime, uid string, ok bool) {
	if slice, rest, found := strings.Cut(c, ":"); found {
		prefix, cid, found := strings.Cut(rest, ":")
		if !found || !isContainerID(cid) {
			return "", "", "", false
		}
		for _, p := range containerPrefixes {
			if prefix+"-" == p.prefix {
				rt = p.runtime
			}
		}
		uid, _ = podComponent(slice, "")
		return cid, rt, uid, true
	}

	name := strings.TrimSuffix(c, ".scope")
	if isContainerID(name) {
		switch {
		case parent == "docker":
			rt = RuntimeDocker
		case parent == "libpod_parent":
			rt = RuntimePodman
		}
		return name, rt, "", true
	}
	for _, p := range containerPrefixes {
		if rest, found := strings.CutPrefix(name, p.prefix); found && isContainerID(rest) {
			return rest, p.runtime, "", true
		}
	}
	return "", "", "", false
}

// podComponent reports whether c is a kubelet pod cgroup: "pod<uid>"
// under a kubepods cgroup (cgroupfs driver) or
// "<kubepods...>-pod<uid>.slice" (systemd driver, where the UID's dashes
// are escaped as underscores because "-" separates slice levels).
func podComponent(c, parent string) (uid string, ok bool) {
	if rest, found := strings.CutPrefix(c, "pod"); found {
		if !strings.Contains(parent, "kubepods") && !isQoSDir(parent) {
			return "", false
		}
		return normalizePodUID(rest)
	}
	name, found := strings.CutSuffix(c, ".slice")
	if !found {
		return "", false
	}
	i := strings.LastIndex(name, "-pod")
	if i < 0 || !strings.Contains(name[:i], "kubepods") {
		return "", false
	}
	return normalizePodUID(name[i+len("-pod"):])
}

func isQoSDir(c string) bool { return c == "burstable" || c == "besteffort" }

// qosOf derives the QoS class from a pod component and its parent. Pods
// of the Guaranteed class sit directly below kubepods.
func qosOf(pod, parent string) QoSClass {
	switch {
	case strings.Contains(pod, "burstable") || strings.Contains(parent, "burstable"):
		return QoSBurstable
	case strings.Contains(pod, "besteffort") || strings.Contains(parent, "besteffort"):
		return QoSBestEffort
	case strings.Contains(pod, "kubepods") || strings.HasSuffix(parent, "kubepods") ||
		strings.HasSuffix(parent, "kubepods.slice"):
		return QoSGuaranteed
	}
	return ""
}

// normalizePodUID turns a UID as it appears in a cgroup name into its
// canonical form, or reports false if s is not a UID: either a UUID
// (8-4-4-4-12 hex digits, dashes or underscores) or 32 hex digits.
func normalizePodUID(s string) (string, bool) {
	switch len(s) {
	case 32:
		if !isLowerHex(s) {
			return "", false
		}
		return s, true
	case 36:
		b := []byte(s)
		for i, c := range b {
			switch i {
			case 8, 13, 18, 23:
				if c != '-' && c != '_' {
					return "", false
				}
				b[i] = '-'
			default:
				if !isLowerHexByte(c) {
					return "", false
				}
			}
		}
		return string(b), true
	}
	return "", false
}

// isContainerID reports whether s is a 64-digit lowercase hex id, the
// form every OCI runtime listed above uses.
func isContainerID(s string) bool { return len(s) == 64 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLowerHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHexByte(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// InfoCache looks up the Info of processes through the cgroup v2 id the
// kernel gives with each new process (bpf_get_current_cgroup_id): the
// processes of one cgroup share their Info, so on a host that starts a
// hundred programs a second in a few cgroups /proc/PID/cgroup is read
// once per cgroup rather than once per process. It is safe for concurrent
// use.
type InfoCache struct {
	procRoot string

	mu   sync.Mutex
	byID map[uint64]Info
}

// maxCachedCgroups bounds InfoCache; past it the cache is emptied.
const maxCachedCgroups = 4096

// NewInfoCache returns an empty cache reading procRoot (see Lookup).
func NewInfoCache(procRoot string) *InfoCache {
	return &InfoCache{procRoot: procRoot, byID: map[uint64]Info{}}
}

// Lookup returns the Info of process pid, whose cgroup v2 id is id (0 when
// unknown): the one of an earlier process of that cgroup, else what
// procRoot/PID/cgroup says. That file's Info is kept for id only when the
// file is the v2 line alone: on v1 and hybrid hosts the v1 hierarchies,
// which Parse also reads, do not follow the v2 id. (A process moved to
// another cgroup between the kernel's id and the read is the one case
// where the two disagree; the entry then names the cgroup it moved to.)
func (c *InfoCache) Lookup(pid uint32, id uint64) (Info, error) {
	if id != 0 {
		c.mu.Lock()
		info, ok := c.byID[id]
		c.mu.Unlock()
		if ok {
			return info, nil
		}
	}
	data, err := readCgroupFile(c.procRoot, pid)
	if err != nil {
		return Info{}, err
	}
	content := string(data)
	info := Parse(content)
	if line, rest, _ := strings.Cut(content, "\n"); id != 0 && strings.HasPrefix(line, "0::/") && strings.TrimSpace(rest) == "" {
		c.mu.Lock()
		if len(c.byID) >= maxCachedCgroups {
			clear(c.byID)
		}
		c.byID[id] = info
		c.mu.Unlock()
	}
	return info, nil
}
