package container

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupID returns the id of the cgroup v2 directory at path (for example
// "/sys/fs/cgroup/system.slice/nginx.service"): the value that the BPF
// helper bpf_get_current_cgroup_id returns for tasks in that cgroup.
//
// The kernel identifies a cgroup by the id of its kernfs node, which on
// 64-bit kernels is also the directory's inode number; CgroupID returns
// the inode number. path must be on a cgroup2 file system: the inode of a
// cgroup v1 directory is not what the helper returns.
//
// To map an Info to an id, join the cgroup2 mount point (Cgroup2Mount)
// with Info.Path. That only works when the agent shares the cgroup
// namespace of the host: an Info.Path starting with "/.." means the
// process lies outside the reader's namespace (for example an agent in a
// Kubernetes pod that is not privileged, which gets a private cgroup
// namespace on cgroup v2 hosts).
func CgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("container: %s is not on a cgroup2 file system (magic %#x)", path, fs.Type)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("container: %s is not a directory", path)
	}
	return st.Ino, nil
}

// maxMountinfo caps how much of a mountinfo file Cgroup2Mount reads.
const maxMountinfo = 1 << 20

// Cgroup2Mount returns the mount point of the first cgroup2 file system
// in procRoot/self/mountinfo: "/sys/fs/cgroup" on a cgroup v2 host,
// typically "/sys/fs/cgroup/unified" on a hybrid one. It fails if no
// cgroup2 file system is mounted.
func Cgroup2Mount(procRoot string) (string, error) {
	name := filepath.Join(procRoot, "self", "mountinfo")
	data, err := readCapped(name, maxMountinfo)
	if err != nil {
		return "", err
	}
	mnt, ok := parseCgroup2Mount(string(data))
	if !ok {
		return "", fmt.Errorf("container: no cgroup2 mount in %s", name)
	}
	return mnt, nil
}

// parseCgroup2Mount finds the first cgroup2 mount point in mountinfo
// content (proc(5)): fields are "id parent major:minor root mountpoint
// options [optional...] - fstype source superoptions", with spaces and
// other special characters in paths escaped as octal "\040".
func parseCgroup2Mount(content string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(content))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fstype, _, _ := strings.Cut(post, " ")
		if fstype != "cgroup2" {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		return unescapeOctal(f[4]), true
	}
	return "", false
}

// unescapeOctal undoes the \ooo escaping of mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }
