// Package store keeps the agent's recent profiles on local disk so that the
// viewer can show them without a Pyroscope server, and so that they survive a
// restart of the agent.
//
// # What is stored
//
// The agent closes a window every interval and produces one CPU profile per
// target (a service plus labels such as pid or container_id). The store
// keeps each such window as two files in a directory per UTC hour of the
// window's start:
//
//	<dir>/20260102T15/20260102T150405.000000000Z-<hash>.pb.gz
//	<dir>/20260102T15/20260102T150405.000000000Z-<hash>.json
//
// The .pb.gz is the gzipped pprof profile exactly as Pyroscope receives it
// (usable directly with `go tool pprof`). The .json sidecar holds what is
// needed to list windows without reading profiles: the window's labels,
// start, duration, sample count, and the size and CRC-32 of the .pb.gz. The
// file name is the window's ID: its start time and a hash of its labels, so
// IDs sort by time and one target has one window per start.
//
// # Durability
//
// Each file is written to a temporary name and renamed into place. The
// profile is renamed first and the sidecar last, so a sidecar is the commit
// record of its window: a crash of the agent leaves either a complete window
// or files that are recognisably partial (temporary files, or a profile
// without sidecar). Files are not fsynced: on a host with process churn a
// window holds hundreds of targets, and two fsyncs per file plus two of the
// directory cost the agent more CPU than sampling (measured: half of its
// time). So a power loss may lose the windows of the last half minute or so
// (the kernel's writeback delay), or leave a sidecar whose profile is empty
// or torn: Open finds a profile of the wrong size, and reading one checks
// its CRC, so such a window is dropped, never served wrong.
// Open rebuilds its in-memory index by scanning the directory, removes
// partial and corrupt files (sidecar that does not parse, profile missing or
// of the wrong size) and counts them; a sidecar of an unknown future version
// is skipped but kept. Open verifies the CRC before parsing a profile.
//
// # Retention
//
// Windows older than Options.MaxAge (by their end) are deleted, and while the
// store holds more than Options.MaxBytes the oldest windows are deleted. Put
// applies both after each write; Prune applies them on demand (call it
// periodically when nothing is being written).
//
// # Failures
//
// A full disk, a read-only file system or missing permissions make Put
// return an error; the error is counted by cause in Stats and logged at most
// once per cause every ten minutes, and the store keeps serving what it
// has. The caller (the agent) keeps sampling and exporting.
package store
