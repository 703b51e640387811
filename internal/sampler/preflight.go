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

// RequirementError says what the host lacks for Scorch to sample. Its
// message is meant for the user, whole.
type RequirementError struct {
	Missing []string
}

func (e *RequirementError) Error() string {
	return "scorch cannot profile on this host:\n  - " + strings.Join(e.Missing, "\n  - ")
}

// Preflight checks, without loading anything, that this process can load BPF
// programs and open system-wide perf events: BTF, privileges and
// perf_event_paranoid. It returns a *RequirementError naming everything
// that is missing, or nil. What the kernel's BPF offers is probed when the
// sampler opens (chooseProgram), not guessed from its version: distribution
// kernels backport BPF features.
func Preflight() error {
	var missing []string

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
