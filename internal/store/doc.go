// Package store keeps the agent's recent profiles on local disk so that the
// viewer can show them without a Pyroscope server, and so that they survive a
// restart of the agent.
//
// # What is stored
//
// The agent closes a window every interval and produces one CPU profile per
// target (a service plus labels such as pid or container_id). The store
// keeps all targets of such a window in two files, whatever their number,
// in a directory per UTC hour of the window's start:
//
//	<dir>/20260102T15/20260102T150405.000000000Z-0.pack
//	<dir>/20260102T15/20260102T150405.000000000Z-0.index
//
// The pack holds the gzipped pprof profile of each target (exactly as
// Pyroscope receives it) back to back. The index, JSON, lists for each
// target what is needed to list windows without reading profiles and to
// find its profile: its ID, labels and sample count, and the offset, size
// and CRC-32 of its bytes in the pack; targets lie back to back from offset
// 0, so the pack's size follows from the index. `tail -c +$((offset+1))
// PACK | head -c SIZE` gives a file usable with `go tool pprof`.
//
// A target's window keeps the ID of earlier versions: its start time and a
// hash of its labels, so IDs sort by time and one target has one window per
// start. The number after the start is a sequence number: windows written
// with the same start (an agent restarted within an interval, or Put)
// get the next one, and a target in a later pack replaces the window of the
// same ID in earlier ones (a pack left with no target is deleted).
//
// One file per target cost too much: on a host with process churn a
// window has hundreds of targets, and creating some 1,700 files a window
// (and deleting as many, by retention) put 40% of the agent's CPU in the
// file system's inode allocation.
//
// Earlier versions stored each target's window as two files,
//
//	<dir>/20260102T15/20260102T150405.000000000Z-<hash>.pb.gz
//	<dir>/20260102T15/20260102T150405.000000000Z-<hash>.json
//
// the profile and a JSON sidecar with the fields of an index entry (but
// the offset) plus the start and duration. Open still reads them, and retention deletes
// them, so an upgraded agent finds its windows; PutWindow no longer writes
// them. The index is not named .json so that such a version, if the agent
// is downgraded, ignores packs rather than removing them as corrupt
// sidecars.
//
// # Durability
//
// Each file is written to a temporary name and renamed into place. The
// pack is renamed first and the index last, so an index is the commit
// record of its window: a crash of the agent leaves either a complete window
// or files that are recognisably partial (temporary files, or a pack
// without index). Files are not fsynced. That was decided when the store
// wrote two files per target: two fsyncs per file plus two of the directory
// cost the agent more CPU than sampling (measured: half of its time). With
// packs, syncing would cost a few fsyncs per window (each waits for the
// device); the store keeps the guarantee it had instead. So a power loss
// may lose the windows of the last half minute or so (the kernel's
// writeback delay), or leave an index whose pack is empty or torn: Open finds a pack of the wrong size, and reading a target checks
// its size and CRC, so such a window is dropped, never served wrong.
// Open rebuilds its in-memory index by scanning the directory, removes
// partial and corrupt files (index or sidecar that does not parse, pack or
// profile missing or of the wrong size, pack without index, profile without
// sidecar) and counts them; an index or sidecar of an unknown future
// version is skipped but kept, with its pack or profile. Open verifies the
// CRC of a target's bytes before parsing its profile.
//
// # Retention
//
// Windows older than Options.MaxAge (by their end) are deleted, and while the
// store holds more than Options.MaxBytes (counting packs, indexes and the
// files of earlier versions) the oldest windows are deleted. All targets of
// a start go together, with their packs. PutWindow applies both after each
// write; Prune applies them on demand (call it periodically when nothing is
// being written).
//
// # Rollups
//
// A host with many services writes many windows: 50 services at 15 s are
// 12,000 an hour, and a viewer that opens each of them cannot answer a
// day in a second. So the store also keeps rollups (rollup.go): for each
// target, the merge of its windows of a period of 5 minutes, and those
// merged again per hour and per day (levels), with their sample labels
// but thread ids, and with the pids of the busiest processes only
// (maxRollupPids): the others' samples merge by stack and comm, so that
// a rollup stays small on a host that starts processes all the time. A
// pid filter on a range read from rollups finds the processes they keep
// (their index lists them); the windows keep every pid.
// A goroutine builds them after Open and after each PutWindow, once a
// period has ended (plus twice the longest window and rollupGrace, for
// windows still being written). They are packs like windows, in the
// directory of their start, with an index of version 2 that names their
// level, so that an older agent skips them instead of counting their
// samples twice; their IDs end with the level ("-5m", "-1h", "-1d").
//
// Each period whose targets all merged also gets a rollup of all targets:
// the merge of their rollups, each target's own labels (those not shared
// by all) added to its samples, under the shared labels and
// scorch_rollup="all targets". MergedAt(k) lists those where they hold a
// period, so that a view without filters reads one profile per period
// instead of one per target (but not where a target shows a coarser
// rollup of its own over the period: it would count twice).
//
// A window may also hold the merge of its targets (PutWindowMerged: the
// agent builds it from the same samples, without pids, so that the same
// stack of a service's many processes is one sample), stored as the
// last target of its pack under the shared labels and allTargetsLabel,
// with an index of version 3 (which an older agent skips). Until its
// period is rolled up it stands for the window's targets in MergedAt:
// the viewer reads one small profile per window instead of one per
// target for the last minutes, which no rollup holds yet (on a host
// starting 100 processes a second, some 1,100 profiles of 46 targets
// and 5-6 minutes, a second of reading). It stands for them
// only while every target of its pack is indexed (a later pack of the
// same start may replace one); rollups merge the targets, not it.
//
// Windows lists the windows only; WindowsAt(k) lists what level k shows:
// its rollups, and where a target has none for a period (it is not built
// yet, or the merge failed: a window unreadable, profiles that do not
// merge, counted in Stats.RollupErrors), the finer rollups or windows of
// that period, so every sample is shown once. Retention treats rollups as
// windows of their start. A window written after its period was rolled
// up is listed by Windows only. The index keeps, for each entry, the
// finest level whose rollup hides it, and apart the entries a view above
// level 0 may show (tiers.go), so that a day's view of rollups never
// walks the day's windows; WindowsWhere lists only the windows a filter
// keeps.
//
// # Failures
//
// A full disk, a read-only file system or missing permissions make
// PutWindow return an error, and nothing of the window is kept; the error
// is counted by cause in Stats and logged at most once per cause every ten
// minutes, and the store keeps serving what it has. The caller (the agent) keeps sampling and exporting.
package store
