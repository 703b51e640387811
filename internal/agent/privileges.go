package agent

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// keptCaps are the capabilities the agent needs after the BPF objects are
// loaded and the perf events opened: symbolization and target discovery
// read other processes' /proc entries, binaries and map_files, and the
// kernel symbol addresses in /proc/kallsyms. Operations on BPF maps and
// perf events through the file descriptors already held need none.
var keptCaps = []uintptr{
	unix.CAP_SYS_PTRACE,         // /proc/PID/exe, root, environ, map_files of other users
	unix.CAP_DAC_READ_SEARCH,    // other users' binaries
	unix.CAP_SYSLOG,             // real addresses in /proc/kallsyms (re-read on module loads)
	unix.CAP_CHECKPOINT_RESTORE, // opening /proc/PID/map_files/* (deleted and memfd binaries)
}

// errCgo says why privileges cannot be dropped in this build: with cgo, Go
// cannot run capset on every thread (syscall.AllThreadsSyscall).
var errCgo = errors.New("built with cgo: capabilities cannot be changed on every thread (build with CGO_ENABLED=0, as make build and the Dockerfile do)")

// dropPrivileges reduces the effective and permitted capability sets of
// every thread of the process to keptCaps (those of them it has), removes
// the others from the bounding set where allowed, clears the inheritable
// and ambient sets and sets no_new_privs. It returns the effective sets
// before and after.
func dropPrivileges() (before, after uint64, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, 0, fmt.Errorf("capget: %w", err)
	}
	before = uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	permitted := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	var keep uint64
	for _, c := range keptCaps {
		keep |= 1 << c
	}
	keep &= permitted

	allThreads := func(trap, a1, a2, a3 uintptr) error {
		if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != 0 {
			if e == syscall.ENOTSUP {
				return errCgo
			}
			return e
		}
		return nil
	}
	// The bounding set needs CAP_SETPCAP, which goes next: shrink it first.
	if permitted&(1<<unix.CAP_SETPCAP) != 0 {
		for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
			if keep&(1<<c) != 0 {
				continue
			}
			if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); err != nil {
				if err == errCgo {
					return before, before, err
				}
				if err == syscall.EINVAL { // a capability this kernel lacks
					continue
				}
				return before, before, fmt.Errorf("prctl(PR_CAPBSET_DROP, %d): %w", c, err)
			}
		}
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil && err != syscall.EINVAL {
		return before, before, fmt.Errorf("prctl(PR_CAP_AMBIENT_CLEAR_ALL): %w", err)
	}
	// On the heap (which does not move) and kept alive: the kernel reads
	// them on every thread, through addresses passed as integers.
	shdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3} // pid 0: each thread itself
	sdata := &[2]unix.CapUserData{
		{Effective: uint32(keep), Permitted: uint32(keep)},
		{Effective: uint32(keep >> 32), Permitted: uint32(keep >> 32)},
	}
	err = allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(shdr)), uintptr(unsafe.Pointer(&sdata[0])), 0)
	runtime.KeepAlive(shdr)
	runtime.KeepAlive(sdata)
	if err != nil {
		return before, before, fmt.Errorf("capset: %w", err)
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return before, keep, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	return before, keep, nil
}
