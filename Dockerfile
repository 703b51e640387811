# syntax=docker/dockerfile:1
#
# Scorch agent image: one privileged container per host (see docs/deploy.md).
#
#   docker build -t scorch .
#   docker run -d --name scorch --restart=unless-stopped \
#     --privileged --pid=host --cgroupns=host \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     -v /var/lib/scorch:/var/lib/scorch \
#     -v /run/containerd:/run/containerd:ro \
#     -v /var/lib/docker/containers:/var/lib/docker/containers:ro \
#     -p 127.0.0.1:7070:7070 \
#     -e SCORCH_PYROSCOPE_URL=http://pyroscope:4040 \
#     scorch agent --listen=0.0.0.0:7070
#
# --pid=host makes the container's /proc the host's, so no /proc mount is
# needed; --cgroupns=host makes /proc/PID/cgroup paths host paths (on
# cgroup v2 docker defaults to a private cgroup namespace). /sys/kernel/debug
# is not needed: Scorch samples with perf events, not kprobes or tracefs.
# The /run/containerd and /var/lib/docker/containers mounts only serve
# container names (internal/container); drop the ones the host lacks.
#
# Instead of --privileged, the minimal set on kernel >= 5.8 (measured by
# deploy/caps_test.go) is:
#   --cap-drop=ALL --cap-add=BPF --cap-add=PERFMON --cap-add=SYS_PTRACE
#   --cap-add=DAC_READ_SEARCH --cap-add=SYSLOG --cap-add=CHECKPOINT_RESTORE
#   --security-opt seccomp=unconfined --security-opt apparmor=unconfined
# (docker's default seccomp profile only allows bpf() and perf_event_open()
# with CAP_SYS_ADMIN on older engines; kernels < 5.8 have no CAP_BPF and
# CAP_PERFMON and need --cap-add=SYS_ADMIN; kernels < 5.11 also need
# --cap-add=SYS_RESOURCE to lift RLIMIT_MEMLOCK for BPF maps).

# Build stage: a plain Go toolchain. The BPF objects are committed bpf2go
# output embedded by go:embed, so neither clang nor libbpf is needed here.
FROM golang:1.26 AS build
WORKDIR /src
# Download modules in their own layer so that source edits reuse it.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary that runs on the libc-less base below.
# -trimpath: no build-machine paths in the binary. -s -w: no symbol table
# or DWARF (smaller image; Scorch does not profile itself by default).
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/scorch ./cmd/scorch

# Final stage: distroless "static" has CA certificates (for an https
# Pyroscope URL), /etc/passwd and tzdata, and no shell or package manager,
# which leaves little for an attacker to use in a privileged container.
# It runs as root (uid 0), deliberately not the :nonroot variant: Docker
# and Kubernetes grant added capabilities to uid 0 only (a non-root user
# would need ambient capabilities, which neither sets).
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/scorch /usr/local/bin/scorch
# Profiles and the local store; mount a host directory here.
VOLUME ["/var/lib/scorch"]
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/scorch"]
CMD ["agent", "--listen=0.0.0.0:7070"]
