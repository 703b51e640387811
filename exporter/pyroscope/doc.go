// Package pyroscope sends CPU profiles to a Pyroscope server (or Grafana
// Cloud Profiles) over Pyroscope's push API.
//
// # How Pyroscope ingests profiles
//
// Pyroscope stores profiles as series. A series is identified by its labels,
// like a Prometheus series: the reserved label __name__ names the kind of
// profile ("process_cpu" for CPU profiles), service_name names the
// application, and any other labels (pid, container_id, hostname, ...) split
// the series further. Labels whose names start with "__" other than __name__
// are dropped by Grafana's write path, so information users need must not be
// put there. Label names must look like Prometheus label names; this package
// replaces any other character with '_'.
//
// The payload of each series sample is a gzipped pprof profile (the
// rawProfile field). The server splits one pprof into one profile type per
// sample type: a CPU profile with sample types samples/count and
// cpu/nanoseconds and period type cpu/nanoseconds, pushed as process_cpu,
// becomes the two profile types
//
//	process_cpu:cpu:nanoseconds:cpu:nanoseconds
//	process_cpu:samples:count:cpu:nanoseconds
//
// Where a profile lands in time is decided by the profile's own TimeNanos
// (and its length by DurationNanos), not by when it was uploaded, so every
// window must carry them. Enqueue fills them from Window.Start and
// Window.Duration when the profile leaves them zero.
//
// The request is POST /push.v1.PusherService/Push, spoken with the Connect
// protocol in binary protobuf. The messages of github.com/grafana/pyroscope/api
// are encoded by hand (wire.go): the generated packages would bring gRPC and
// the OpenAPI annotations into the agent's binary for one request type. The
// tests decode what we send with Pyroscope's own generated handler.
// Multi-tenant servers read the tenant from the X-Scope-OrgID header; Grafana
// Cloud authenticates with HTTP basic auth (the stack's user id and an access
// token).
//
// # Delivery
//
// An Exporter decouples sampling from the network. Enqueue serializes a
// window and puts it on a queue bounded in bytes; it never waits for the
// network. When the queue is full the oldest windows are dropped (and counted)
// so that the most recent data survives an outage. A single goroutine, the
// one that calls Run, takes windows from the head of the queue in order,
// batches them into push requests and sends them. A request that fails with
// a transient error (network error, timeout, HTTP 408, 429, 5xx) is retried
// with exponential backoff and full jitter, waiting at least as long as the
// server's Retry-After header asks. A request the server refuses for good
// (other 4xx such as 400, 401, 403, 413) is not retried: its windows are
// dropped and counted, and the cause is logged at most once per cause every
// ten minutes. A batch refused for good is re-sent one window at a time so
// that one bad window does not take the others with it; this cannot
// duplicate windows because Pyroscope's distributor validates every series
// of a request before it stores any (it also replaces the sample IDs we
// send, so IDs do not deduplicate).
//
// A window is re-sent only after a failed attempt, so a server that answered
// receives each window once. (When a request times out after the server
// stored it, the retry is a duplicate; no push protocol can rule that out.)
// Every outcome is counted in Stats.
package pyroscope
