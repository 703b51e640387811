package pyroscope

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	errX := errors.New("x")
	for _, c := range []struct {
		err        error
		status     int
		retryAfter string
		want       outcome
	}{
		{nil, 200, "", outcome{}},
		{errX, 400, "", outcome{cause: "http_400"}},
		{errX, 401, "", outcome{cause: "http_401"}},
		{errX, 403, "", outcome{cause: "http_403"}},
		{errX, 413, "", outcome{cause: "http_413"}},
		{errX, 408, "", outcome{cause: "http_408", retry: true}},
		{errX, 429, "7", outcome{cause: "http_429", retry: true, notBefore: 7 * time.Second}},
		{errX, 503, now.Add(90 * time.Second).Format(http.TimeFormat), outcome{cause: "http_503", retry: true, notBefore: 90 * time.Second}},
		{errX, 500, "7", outcome{cause: "http_500", retry: true}}, // Retry-After only on 429/503
		{errX, 502, "", outcome{cause: "http_502", retry: true}},
		{errX, 499, "", outcome{cause: "http_499", retry: true}},
		{fmt.Errorf("post: %w", context.DeadlineExceeded), 0, "", outcome{cause: "timeout", retry: true}},
		{errX, 0, "", outcome{cause: "network", retry: true}},
		{errX, 200, "", outcome{cause: "bad_response"}},
	} {
		got := classify(c.err, &attempt{status: c.status, retryAfter: c.retryAfter}, now)
		if got != c.want {
			t.Errorf("classify(%v, %d, %q) = %+v, want %+v", c.err, c.status, c.retryAfter, got, c.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		" 3 ":                           3 * time.Second,
		"99999999999999999999":          0, // does not parse as int64, nor as a date
		"9999999999":                    24 * time.Hour,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:00 GMT": 0, // in the past
		"Fri, 02 Jan 2026 03:05:05 GMT": time.Minute,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	min, max := 10*time.Millisecond, time.Second
	for n := range 100 {
		ceil := max
		if n < 7 {
			ceil = min << n
		}
		for range 50 {
			if d := backoff(n, min, max); d < 0 || d >= ceil {
				t.Fatalf("backoff(%d) = %v, want in [0, %v)", n, d, ceil)
			}
		}
	}
	// Full jitter: the waits spread over the whole range.
	var lo, hi bool
	for range 1000 {
		d := backoff(20, min, max)
		lo = lo || d < max/4
		hi = hi || d > 3*max/4
	}
	if !lo || !hi {
		t.Errorf("backoff(20) is not spread over [0, %v): low %v high %v", max, lo, hi)
	}
}

func TestSanitizeLabelName(t *testing.T) {
	for in, want := range map[string]string{
		"service_name": "service_name",
		"k8s.pod-name": "k8s_pod_name",
		"9lives":       "_lives",
		"":             "_",
		"ünï":          "__n__",
	} {
		if got := sanitizeLabelName(in); got != want {
			t.Errorf("sanitizeLabelName(%q) = %q, want %q", in, got, want)
		}
	}
}
