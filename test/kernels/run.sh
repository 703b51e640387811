#!/usr/bin/env bash
# make test-kernels: boots Debian's packaged kernels under QEMU (software
# emulation: no KVM needed) on an initramfs of busybox, the static scorch
# binary and a static workload, runs `scorch record` with the table program
# and with the frame-pointer-only program forced, and checks on the serial
# output that both name the workload's hot function and its caller.
#
# Kernels: SCORCH_KERNELS, Debian package names (meta packages are
# resolved to the image they depend on), each optionally SUITE:PACKAGE for
# a suite the system's apt sources lack (fetched with an apt state of its
# own in the cache, from deb.debian.org); default Debian 11's 5.10 (no
# bpf_loop: the frame-pointer program loads by itself, attached by ioctl)
# and Debian 12's 6.1 and 6.12. The .debs are cached in SCORCH_KERNEL_CACHE (default
# ~/.cache/scorch/kernels). Needs apt-get, qemu-system-x86, busybox-static,
# gcc (static libc), cpio and gzip.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="/usr/local/go/bin:$PATH"
KERNELS=${SCORCH_KERNELS:-"bullseye:linux-image-amd64 linux-image-amd64 linux-image-6.12-amd64"}
CACHE=${SCORCH_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scorch/kernels}
DURATION=${SCORCH_KERNEL_DURATION:-4} # seconds per record
TIMEOUT=${SCORCH_KERNEL_TIMEOUT:-600} # seconds per boot

fail() { echo "test-kernels: FAIL: $*" >&2; exit 1; }

missing=()
for need in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static gcc:gcc cpio:cpio gzip:gzip apt-get:apt dpkg-deb:dpkg; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need%%:*} (package ${need#*:})")
done
if [ -x /bin/busybox ] && [[ "$(LC_ALL=C ldd /bin/busybox 2>&1 || true)" != *"not a dynamic"* ]]; then
  missing+=("a static /bin/busybox (package busybox-static)")
fi
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=("static libc (package libc6-dev)")
[ ${#missing[@]} -eq 0 ] || fail "missing: ${missing[*]}"

work=$(mktemp -d /tmp/scorch-kernels.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE"

# The initramfs: busybox, scorch, the two workload builds, /init.
echo "test-kernels: building the initramfs"
rd=$work/root
mkdir -p "$rd"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$rd/bin/busybox"
CGO_ENABLED=0 "${GO:-go}" build -trimpath -o "$rd/bin/scorch" ./cmd/scorch
gcc -static -O1 -fno-omit-frame-pointer -o "$rd/bin/hot-fp" test/kernels/hot.c
gcc -static -O1 -o "$rd/bin/hot-nofp" test/kernels/hot.c
install -m 0755 test/kernels/init "$rd/init"
(cd "$rd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# resolve PKG: the versioned image package a meta package depends on.
resolve() {
  local dep
  dep=$(apt-cache "${aptopts[@]}" depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  echo "${dep:-$1}"
}

# suite SUITE: point aptopts at an apt state of SUITE's own (the system's
# sources stay as they are); no SUITE: the system's.
suite() {
  aptopts=()
  [ -n "$1" ] || return 0
  local a=$CACHE/apt-$1
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\ndeb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security %s-security main\n' "$1" "$1" >"$a/sources.list"
  aptopts=(-o "Dir::Etc::SourceList=$a/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache" -o Debug::NoLocking=1)
}

status=0
for spec in $KERNELS; do
  want=${spec#*:}
  [ "$want" != "$spec" ] && suite "${spec%%:*}" || suite ""
  pkg=$(resolve "$want")
  if ! apt-cache "${aptopts[@]}" show "$pkg" >/dev/null 2>&1; then
    apt-get "${aptopts[@]}" update -qq 2>&1 | grep -v 'couldn.t be accessed by user' || true
    pkg=$(resolve "$want")
  fi
  deb=$(ls "$CACHE/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    echo "test-kernels: downloading $pkg"
    (cd "$CACHE" && apt-get "${aptopts[@]}" download -q "$pkg" 2>&1 | grep -v 'couldn.t be accessed by user' || true)
    deb=$(ls "$CACHE/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || fail "could not download $pkg (apt-get download $pkg)"
  fi
  x=$work/$pkg
  mkdir -p "$x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards './boot/*'
  vmlinuz=$(ls "$x"/boot/vmlinuz-* | head -n1)
  config=$(ls "$x"/boot/config-* | head -n1)
  # Everything the VM needs is built in: it boots without modules.
  for opt in BPF_SYSCALL PERF_EVENTS DEBUG_INFO_BTF BPF_EVENTS BLK_DEV_INITRD RD_GZIP DEVTMPFS SERIAL_8250_CONSOLE; do
    grep -q "^CONFIG_$opt=y" "$config" || fail "$pkg: CONFIG_$opt is not built in ($(grep "CONFIG_$opt[= ]" "$config" || echo unset))"
  done

  echo "test-kernels: booting $pkg under QEMU (TCG)"
  log=$work/$pkg.log
  t0=$(date +%s)
  timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1G -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 scorch.duration=$DURATION" </dev/null >"$log" 2>&1 || true
  t1=$(date +%s)
  tr -d '\r' <"$log" >"$log.txt"
  if ! grep -q '^scorch-vm: done' "$log.txt"; then
    tail -n 40 "$log.txt"
    fail "$pkg: the VM did not finish within ${TIMEOUT}s (serial output above)"
  fi
  grep '^scorch-vm: .*exit\|^scorch-vm: kernel\|^scorch: wrote\|level=WARN\|level=INFO.*\(program\|lacks\|ioctl\)' "$log.txt" || true
  echo "test-kernels: $pkg: boot, two records and power-off in $((t1 - t0)) s"
  # check NAME [CALLER]: the folded stacks of record NAME name hot_inner,
  # under CALLER if given.
  check() {
    local name=$1 caller=${2:-}
    awk -v name="$name" -v pkg="$pkg" -v caller="$caller" '
      $0 == "scorch-vm: begin " name { on = 1; next }
      $0 == "scorch-vm: end " name { on = 0; next }
      on && /^hot-/ {
        # comm;root;...;leaf[;kernel frames of an interrupt] count
        n = $NF; total += n
        if (n > topn) { topn = n; top = $0 }
        if (index($1, ";hot_inner")) { hot += n; if (caller == "" || index($1, ";" caller ";hot_inner")) ok += n }
      }
      END {
        printf "test-kernels: %s %s: %d samples of the workload, %d in hot_inner, %d of them under %s\n", pkg, name, total, hot, ok, (caller == "" ? "any caller" : caller)
        printf "test-kernels: %s %s: its most frequent stack: %s\n", pkg, name, top
        # hot_inner runs about a millisecond per call and nearly all the
        # workload time: it must lead, and the walk must find its caller
        # but for the prologue and epilogue instructions (a handful of
        # samples in thousands of calls).
        if (total < 20) { print "test-kernels: FAIL: " pkg " " name ": fewer than 20 samples of the workload"; exit 1 }
        if (hot * 10 < total * 8) { print "test-kernels: FAIL: " pkg " " name ": hot_inner has under 80% of the workload samples"; exit 1 }
        if (ok * 100 < hot * 95) { print "test-kernels: FAIL: " pkg " " name ": under 95% of hot_inner samples have the caller " caller; exit 1 }
      }' "$log.txt"
  }
  # What the kernel should get, from its version (the known answer the
  # feature probes must find): 5.17 has bpf_loop, 5.15 perf-event links.
  read -r major minor < <(echo "$pkg" | sed -E 's/^linux-image-([0-9]+)\.([0-9]+).*/\1 \2/')
  rel=$((major * 100 + minor))
  if [ $rel -ge 517 ]; then
    # The default program walks the no-frame-pointer build with tables.
    check default "main;hot_outer" || status=1
    if grep -q 'this kernel lacks' "$log.txt"; then
      echo "test-kernels: FAIL: $pkg: the kernel has bpf_loop but scorch fell back to frame pointers"; status=1
    fi
  else
    # Frame pointers only: the leaf is right, its caller in a build
    # without frame pointers is not expected to be.
    check default || status=1
    grep -q 'level=WARN msg="this kernel lacks .*bpf_loop' "$log.txt" ||
      { echo "test-kernels: FAIL: $pkg: no warning that the kernel lacks bpf_loop"; status=1; }
  fi
  if [ $rel -lt 515 ] && ! grep -q 'attaching by ioctl' "$log.txt"; then
    echo "test-kernels: FAIL: $pkg: the log does not say the program was attached by ioctl"; status=1
  fi
  check fp-only "main;hot_outer" || status=1
  grep -q 'level=INFO msg="unwind tables off: loading the frame-pointer-only BPF program"' "$log.txt" ||
    { echo "test-kernels: FAIL: $pkg fp-only: the log does not say the frame-pointer-only program was loaded"; status=1; }
  [ $status -eq 0 ] || { sed -n '/scorch-vm: kernel/,$p' "$log.txt" | head -n 80; }
done
[ $status -eq 0 ] || fail "see above"
echo "test-kernels: ok"
