package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	id1  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	uid  = "5e5c5b8e-3f2a-4b1c-9d7e-0a1b2c3d4e5f"
	uidU = "5e5c5b8e_3f2a_4b1c_9d7e_0a1b2c3d4e5f"
	// Static (mirror) pods have a 32-hex-digit config hash as UID.
	staticUID = "c83c4d0a4b5e8a3e5b8c8f2d1f7c7b2a"
)

// TestParsePaths covers the cgroup path formats produced by the container
// runtimes and cgroup drivers found in the wild, as v2 "0::" lines.
func TestParsePaths(t *testing.T) {
	tests := []struct {
		name string
		path string
		want Info
	}{
		{"docker systemd driver", "/system.slice/docker-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeDocker, Unit: "docker-" + id1 + ".scope", Slice: "system.slice"}},
		{"docker cgroupfs driver", "/docker/" + id1,
			Info{ContainerID: id1, Runtime: RuntimeDocker}},
		{"docker-in-docker, cgroupfs", "/docker/" + id1 + "/docker/" + id2,
			Info{ContainerID: id2, Runtime: RuntimeDocker}},
		{"docker-in-docker, systemd outer", "/system.slice/docker-" + id1 + ".scope/docker/" + id2,
			Info{ContainerID: id2, Runtime: RuntimeDocker, Unit: "docker-" + id1 + ".scope", Slice: "system.slice"}},
		{"systemd inside a docker container", "/system.slice/docker-" + id1 + ".scope/init.scope",
			Info{ContainerID: id1, Runtime: RuntimeDocker, Unit: "init.scope", Slice: "system.slice"}},
		{"rootless docker", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeDocker, Unit: "docker-" + id1 + ".scope", Slice: "user.slice"}},
		{"github actions job container", "/actions_job/" + id1,
			Info{ContainerID: id1}},
		{"kubelet cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + id1,
			Info{ContainerID: id1, PodUID: uid, QoS: QoSBurstable}},
		{"kubelet cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + id1,
			Info{ContainerID: id1, PodUID: uid, QoS: QoSBestEffort}},
		{"kubelet cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + id1,
			Info{ContainerID: id1, PodUID: uid, QoS: QoSGuaranteed}},
		{"kubelet cgroupfs static pod", "/kubepods/burstable/pod" + staticUID + "/" + id1,
			Info{ContainerID: id1, PodUID: staticUID, QoS: QoSBurstable}},
		{"k3s cgroupfs", "/kubepods/besteffort/pod" + uid + "/" + id1,
			Info{ContainerID: id1, PodUID: uid, QoS: QoSBestEffort}},
		{"containerd systemd driver burstable",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSBurstable,
				Unit: "cri-containerd-" + id1 + ".scope", Slice: "kubepods-burstable-pod" + uidU + ".slice"}},
		{"containerd systemd driver guaranteed",
			"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSGuaranteed,
				Unit: "cri-containerd-" + id1 + ".scope", Slice: "kubepods-pod" + uidU + ".slice"}},
		{"cri-o systemd driver besteffort",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeCRIO, PodUID: uid, QoS: QoSBestEffort,
				Unit: "crio-" + id1 + ".scope", Slice: "kubepods-besteffort-pod" + uidU + ".slice"}},
		{"cri-o cgroupfs driver", "/kubepods/burstable/pod" + uid + "/crio-" + id1,
			Info{ContainerID: id1, Runtime: RuntimeCRIO, PodUID: uid, QoS: QoSBurstable}},
		{"cri-o conmon is not the container",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + id1 + ".scope",
			Info{PodUID: uid, QoS: QoSBestEffort,
				Unit: "crio-conmon-" + id1 + ".scope", Slice: "kubepods-besteffort-pod" + uidU + ".slice"}},
		{"cri-o systemd inside container",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + id1 + ".scope/init.scope",
			Info{ContainerID: id1, Runtime: RuntimeCRIO, PodUID: uid, QoS: QoSBurstable,
				Unit: "init.scope", Slice: "kubepods-burstable-pod" + uidU + ".slice"}},
		{"systemd driver configured, cgroupfs path",
			"/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + id1,
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSBurstable,
				Unit: "containerd.service", Slice: "system.slice"}},
		{"kind node, private cgroupns",
			"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSBestEffort,
				Unit: "cri-containerd-" + id1 + ".scope", Slice: "kubelet-kubepods-besteffort-pod" + uidU + ".slice"}},
		{"kind node seen from the host",
			"/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSGuaranteed,
				Unit: "cri-containerd-" + id1 + ".scope", Slice: "kubelet-kubepods-pod" + uidU + ".slice"}},
		{"reader in a private cgroup namespace",
			"/../../kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSBestEffort,
				Unit: "cri-containerd-" + id1 + ".scope", Slice: "kubepods-besteffort-pod" + uidU + ".slice"}},
		{"kubelet pod-level cgroup, no container", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice",
			Info{PodUID: uid, QoS: QoSBurstable, Slice: "kubepods-burstable-pod" + uidU + ".slice"}},
		{"podman rootful", "/machine.slice/libpod-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimePodman, Unit: "libpod-" + id1 + ".scope", Slice: "machine.slice"}},
		{"podman rootful, cgroupns container subgroup", "/machine.slice/libpod-" + id1 + ".scope/container",
			Info{ContainerID: id1, Runtime: RuntimePodman, Unit: "libpod-" + id1 + ".scope", Slice: "machine.slice"}},
		{"podman rootless",
			"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimePodman, Unit: "libpod-" + id1 + ".scope", Slice: "user.slice"}},
		{"podman pod", "/machine.slice/machine-libpod_pod_" + id2 + ".slice/libpod-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimePodman, Unit: "libpod-" + id1 + ".scope", Slice: "machine-libpod_pod_" + id2 + ".slice"}},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id1,
			Info{ContainerID: id1, Runtime: RuntimePodman}},
		{"podman conmon", "/machine.slice/libpod-conmon-" + id1 + ".scope",
			Info{Unit: "libpod-conmon-" + id1 + ".scope", Slice: "machine.slice"}},
		{"nerdctl", "/system.slice/nerdctl-" + id1 + ".scope",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, Unit: "nerdctl-" + id1 + ".scope", Slice: "system.slice"}},
		{"host service", "/system.slice/nginx.service",
			Info{Unit: "nginx.service", Slice: "system.slice"}},
		{"k3s server", "/system.slice/k3s.service",
			Info{Unit: "k3s.service", Slice: "system.slice"}},
		{"user session", "/user.slice/user-1000.slice/session-3.scope",
			Info{Unit: "session-3.scope", Slice: "user-1000.slice"}},
		{"user service", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope",
			Info{Unit: "app-firefox.scope", Slice: "app.slice"}},
		{"init", "/init.scope", Info{Unit: "init.scope"}},
		{"root", "/", Info{}},
		{"uppercase id is not a container id", "/docker/" + strings.ToUpper(id1), Info{}},
		{"63 digits", "/docker/" + id1[1:], Info{}},
		{"pod outside kubepods is not a pod", "/foo/pod" + uid + "/" + id1, Info{ContainerID: id1}},
		{"bad uid", "/kubepods/burstable/pod" + strings.Replace(uid, "-", "x", 1) + "/" + id1, Info{ContainerID: id1}},
		{"bare .slice and .scope", "/.slice/.scope", Info{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Path = tt.path
			got := Parse("0::" + tt.path + "\n")
			if got != tt.want {
				t.Errorf("Parse(0::%s)\n got %+v\nwant %+v", tt.path, got, tt.want)
			}
		})
	}
}

// TestParseV1 covers cgroup v1 and hybrid hosts, where the identity is on
// the v1 lines.
func TestParseV1(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    Info
	}{
		{"v1 docker",
			"12:pids:/docker/" + id1 + "\n11:memory:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n",
			Info{ContainerID: id1, Runtime: RuntimeDocker}},
		{"hybrid: v2 line is root, identity in v1",
			"9:name=systemd:/kubepods/burstable/pod" + uid + "/" + id1 + "\n4:memory:/kubepods/burstable/pod" + uid + "/" + id1 + "\n0::/\n",
			Info{Path: "/", ContainerID: id1, PodUID: uid, QoS: QoSBurstable}},
		{"hybrid: v2 has the identity",
			"1:name=systemd:/system.slice/docker-" + id1 + ".scope\n0::/system.slice/docker-" + id1 + ".scope\n",
			Info{Path: "/system.slice/docker-" + id1 + ".scope", ContainerID: id1, Runtime: RuntimeDocker,
				Unit: "docker-" + id1 + ".scope", Slice: "system.slice"}},
		{"hybrid host service",
			"1:name=systemd:/system.slice/sshd.service\n0::/\n",
			Info{Path: "/", Unit: "sshd.service", Slice: "system.slice"}},
		{"only a controller hierarchy knows (this sandbox's layout)",
			"9:name=systemd:/\n4:memory:/process_api/19d5b63b88b4e97ba122335c2a81ba03\n0::/\n",
			Info{Path: "/"}},
		{"v1 controller path with a colon",
			"3:cpu,cpuacct:/kubepods.slice/kubepods-besteffort-pod" + uidU + ".slice:cri-containerd:" + id1 + "\n",
			Info{ContainerID: id1, Runtime: RuntimeContainerd, PodUID: uid, QoS: QoSBestEffort, Slice: "kubepods.slice"}},
		{"garbage", "not a cgroup file\n::\n0:\n:::\n\x00", Info{}},
		{"empty", "", Info{}},
		{"no trailing newline", "0::/system.slice/cron.service", Info{Path: "/system.slice/cron.service", Unit: "cron.service", Slice: "system.slice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Parse(tt.content); got != tt.want {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.content, got, tt.want)
			}
		})
	}
}

// TestLookupSelf reads this test process's own cgroup file and checks
// that Lookup agrees with the kernel's cgroup v2 line.
func TestLookupSelf(t *testing.T) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var v2 string
	for line := range strings.SplitSeq(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			v2 = p
		}
	}
	info, err := Lookup("/proc", uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != v2 {
		t.Errorf("Lookup(self).Path = %q, /proc/self/cgroup has 0::%s", info.Path, v2)
	}
	if _, err := Lookup("/proc", 0); err == nil {
		t.Error("Lookup of pid 0 succeeded")
	}
}

func TestLookupTooLarge(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0::/"+strings.Repeat("a", 100)+"\n", maxCgroupFile/100)
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(root, 42); err == nil || !strings.Contains(err.Error(), "size limit") {
		t.Errorf("Lookup of a %d-byte file: err = %v, want size limit error", len(big), err)
	}
	ok := "0::/kubepods/pod" + uid + "/" + id1 + "\n"
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte(ok), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := Lookup(root, 42)
	if err != nil || info.ContainerID != id1 || info.PodUID != uid {
		t.Errorf("Lookup = %+v, %v; want container %s pod %s", info, err, id1, uid)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("0::/system.slice/docker-" + id1 + ".scope\n")
	f.Add("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope\n")
	f.Add("12:pids:/kubepods/burstable/pod" + uid + "/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n0::/\n")
	f.Add("0::/system.slice/containerd.service/kubepods-burstable-pod" + uidU + ".slice:cri-containerd:" + id1 + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		info := Parse(s)
		if info.ContainerID != "" && !isContainerID(info.ContainerID) {
			t.Errorf("invalid container id %q", info.ContainerID)
		}
		if info.PodUID != "" {
			if _, ok := normalizePodUID(info.PodUID); !ok || strings.Contains(info.PodUID, "_") {
				t.Errorf("invalid pod uid %q", info.PodUID)
			}
		} else if info.QoS != "" {
			t.Errorf("QoS %q without pod", info.QoS)
		}
		if info.Path != "" && !strings.Contains(s, "0::"+info.Path) {
			t.Errorf("Path %q not in input", info.Path)
		}
	})
}

// TestInfoCache: processes of one cgroup v2 id share the Info read for the
// first of them, on a host where /proc/PID/cgroup is the v2 line alone; on
// a hybrid host (v1 lines too) each process's file is read; an id of 0
// (unknown) is never cached.
func TestInfoCache(t *testing.T) {
	root := t.TempDir()
	write := func(pid int, content string) {
		t.Helper()
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := NewInfoCache(root)
	write(1, "0::/system.slice/docker-"+id1+".scope\n")
	if info, err := c.Lookup(1, 77); err != nil || info.ContainerID != id1 {
		t.Fatalf("Lookup(1, 77) = %+v, %v; want container %s", info, err, id1)
	}
	// Pid 2 has no file: its cgroup's Info comes from pid 1's read.
	if info, err := c.Lookup(2, 77); err != nil || info.ContainerID != id1 {
		t.Errorf("Lookup(2, 77) = %+v, %v; want pid 1's container %s from the cache", info, err, id1)
	}
	if _, err := c.Lookup(2, 0); err == nil {
		t.Error("Lookup(2, 0) of a pid without a file succeeded: an unknown id must not use the cache")
	}
	// Hybrid: not kept.
	write(3, "12:cpu,cpuacct:/docker/"+id2+"\n0::/\n")
	if info, err := c.Lookup(3, 78); err != nil || info.ContainerID != id2 {
		t.Fatalf("Lookup(3, 78) = %+v, %v; want container %s", info, err, id2)
	}
	if _, err := c.Lookup(4, 78); err == nil {
		t.Error("Lookup(4, 78) used the Info of a hybrid host's file: v1 hierarchies do not follow the v2 id")
	}
}
