package sampler

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability numbers from include/uapi/linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// MinKernel is the oldest kernel Scorch runs on: BPF ring buffers and
// CAP_BPF/CAP_PERFMON arrived in 5.8.
var MinKernel = [2]int{5, 8}

// RequirementError says what the host lacks for Scorch to sample. Its
// message is meant for the user, whole.
type RequirementError struct {
	Missing []string
}

func (e *RequirementError) Error() string {
	return "scorch cannot profile on this host:\n  - " + strings.Join(e.Missing, "\n  - ")
}

// Preflight checks, without loading anything, that this process can load BPF
// programs and open system-wide perf events: kernel version, BTF, privileges
// and perf_event_paranoid. It returns a *RequirementError naming everything
// that is missing, or nil.
func Preflight() error {
	var missing []string

	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		rel := unix.ByteSliceToString(uts.Release[:])
		if maj, min, ok := parseKernelRelease(rel); ok && (maj < MinKernel[0] || maj == MinKernel[0] && min < MinKernel[1]) {
			missing = append(missing, fmt.Sprintf("kernel %s is too old: Scorch needs Linux %d.%d or newer", rel, MinKernel[0], MinKernel[1]))
		}
	}

	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "no kernel BTF (/sys/kernel/btf/vmlinux): the kernel must be built with CONFIG_DEBUG_INFO_BTF=y")
	}

	capEff, err := effectiveCaps()
	if err != nil {
		missing = append(missing, "cannot read this process's capabilities: "+err.Error())
	} else {
		has := func(c uint) bool { return capEff&(1<<c) != 0 }
		if !has(capSysAdmin) && !(has(capBPF) && has(capPerfmon)) {
			who := "not running as root"
			if os.Geteuid() == 0 {
				who = "running as root but without the needed capabilities"
			}
			var lacking []string
			if !has(capBPF) {
				lacking = append(lacking, "CAP_BPF")
			}
			if !has(capPerfmon) {
				lacking = append(lacking, "CAP_PERFMON")
			}
			missing = append(missing, fmt.Sprintf("%s: missing %s (or CAP_SYS_ADMIN); run with sudo or grant them, e.g. setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep scorch",
				who, strings.Join(lacking, " and ")))
			if p, err := readParanoid(); err == nil && p > -1 {
				missing = append(missing, fmt.Sprintf("kernel.perf_event_paranoid is %d: without CAP_PERFMON system-wide profiling needs it at -1 (sysctl kernel.perf_event_paranoid=-1)", p))
			}
		}
	}

	if len(missing) > 0 {
		return &RequirementError{Missing: missing}
	}
	return nil
}

func parseKernelRelease(rel string) (major, minor int, ok bool) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	return major, minor, err1 == nil && err2 == nil
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

func readParanoid() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/perf_event_paranoid")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// explainLoadError turns a load or attach failure into one the user can act
// on, where the errno says enough.
func explainLoadError(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		if perr := Preflight(); perr != nil {
			return fmt.Errorf("%s: %w", what, perr)
		}
		return fmt.Errorf("%s: permission denied (%v): run as root or with CAP_BPF and CAP_PERFMON; a security module (lockdown, SELinux, seccomp in a container) may also forbid BPF", what, err)
	case errors.Is(err, unix.ENOENT) && strings.Contains(what, "perf event"):
		return fmt.Errorf("%s: the kernel has no software cpu-clock perf event (%v)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
