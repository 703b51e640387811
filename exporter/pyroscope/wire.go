package pyroscope

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file speaks Pyroscope's push API, push.v1.PusherService/Push, over
// the Connect protocol's unary form: an HTTP POST of the request message in
// binary protobuf, answered 200 with the response message, or with an error
// status and a JSON body {"code": ..., "message": ...}.
//
// The messages are small and fixed (push/v1/push.proto and
// types/v1/types.proto of github.com/grafana/pyroscope/api), so they are
// encoded here with protowire instead of the generated packages: those
// bring gRPC and the OpenAPI annotation packages with them, 17 MB of binary
// and about 10 MB of resident memory on every host for one request type.
// The tests check the encoding against Pyroscope's own generated handler.

// pushPath is the Connect route of push.v1.PusherService/Push.
const pushPath = "/push.v1.PusherService/Push"

// Field numbers, from push/v1/push.proto and types/v1/types.proto.
const (
	fieldPushRequestSeries = 1 // PushRequest.series: repeated RawProfileSeries
	fieldSeriesLabels      = 1 // RawProfileSeries.labels: repeated types.v1.LabelPair
	fieldSeriesSamples     = 2 // RawProfileSeries.samples: repeated RawSample
	fieldLabelName         = 1 // LabelPair.name
	fieldLabelValue        = 2 // LabelPair.value
	fieldSampleRawProfile  = 1 // RawSample.raw_profile: a gzipped pprof
	fieldSampleID          = 2 // RawSample.ID
)

// The Connect protocol's unary form, and how much of an answer is read.
const (
	connectProtocolVersion  = "1"
	connectContentTypeProto = "application/proto"
	maxErrorBody            = 4 << 10
	maxSuccessBody          = 64 << 10
)

// labelPair is a types.v1.LabelPair.
type labelPair struct{ name, value string }

// series is a push.v1.RawProfileSeries of one RawSample.
type series struct {
	labels []labelPair
	raw    []byte // gzipped pprof
	id     string
}

// encodePushRequest returns the binary protobuf of a PushRequest holding ss.
func encodePushRequest(ss []*series) []byte {
	n := 0
	for _, s := range ss {
		n += s.size() + 16
	}
	b := make([]byte, 0, n)
	for _, s := range ss {
		b = protowire.AppendTag(b, fieldPushRequestSeries, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(s.size()))
		b = s.append(b)
	}
	return b
}

func (s *series) size() int {
	n := 0
	for _, l := range s.labels {
		m := l.size()
		n += protowire.SizeTag(fieldSeriesLabels) + protowire.SizeBytes(m)
	}
	return n + protowire.SizeTag(fieldSeriesSamples) + protowire.SizeBytes(s.sampleSize())
}

func (s *series) sampleSize() int {
	return protowire.SizeTag(fieldSampleRawProfile) + protowire.SizeBytes(len(s.raw)) +
		protowire.SizeTag(fieldSampleID) + protowire.SizeBytes(len(s.id))
}

func (s *series) append(b []byte) []byte {
	for _, l := range s.labels {
		b = protowire.AppendTag(b, fieldSeriesLabels, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(l.size()))
		b = protowire.AppendTag(b, fieldLabelName, protowire.BytesType)
		b = protowire.AppendString(b, l.name)
		b = protowire.AppendTag(b, fieldLabelValue, protowire.BytesType)
		b = protowire.AppendString(b, l.value)
	}
	b = protowire.AppendTag(b, fieldSeriesSamples, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(s.sampleSize()))
	b = protowire.AppendTag(b, fieldSampleRawProfile, protowire.BytesType)
	b = protowire.AppendBytes(b, s.raw)
	b = protowire.AppendTag(b, fieldSampleID, protowire.BytesType)
	return protowire.AppendString(b, s.id)
}

func (l labelPair) size() int {
	return protowire.SizeTag(fieldLabelName) + protowire.SizeBytes(len(l.name)) +
		protowire.SizeTag(fieldLabelValue) + protowire.SizeBytes(len(l.value))
}

// attempt is what one push request saw of the server.
type attempt struct {
	status     int    // HTTP status, 0 if no response
	retryAfter string // Retry-After header of the response
}

// push sends one PushRequest body to endpoint. The error of a refused
// request names the status and the server's Connect error, if it sent one.
func push(ctx context.Context, hc *http.Client, endpoint string, body []byte) (attempt, error) {
	var a attempt
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return a, err
	}
	req.Header.Set("Content-Type", connectContentTypeProto)
	req.Header.Set("Connect-Protocol-Version", connectProtocolVersion)
	if dl, ok := ctx.Deadline(); ok {
		if ms := time.Until(dl).Milliseconds(); ms > 0 {
			req.Header.Set("Connect-Timeout-Ms", strconv.FormatInt(ms, 10))
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	a.retryAfter = resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return a, fmt.Errorf("pyroscope: server answered %s%s", resp.Status, connectError(resp.Header.Get("Content-Type"), msg))
	}
	// A PushResponse is empty; read it so that the connection is reused.
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxSuccessBody))
	if err != nil {
		return a, fmt.Errorf("pyroscope: reading the response: %w", err)
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != connectContentTypeProto || n == maxSuccessBody {
		// Not a Connect server: a proxy's page, or another HTTP server
		// at a wrong URL path.
		return a, fmt.Errorf("pyroscope: server answered 200 with %q, not a push response: is the URL a Pyroscope server?", resp.Header.Get("Content-Type"))
	}
	return a, nil
}

// connectError renders the JSON error body of a Connect unary response, or
// the start of whatever else the server sent.
func connectError(contentType string, body []byte) string {
	var ce struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if ct, _, _ := mime.ParseMediaType(contentType); ct == "application/json" && json.Unmarshal(body, &ce) == nil && ce.Code != "" {
		if ce.Message == "" {
			return ": " + ce.Code
		}
		return ": " + ce.Code + ": " + clip(ce.Message)
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		return ": " + clip(s)
	}
	return ""
}

func clip(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
