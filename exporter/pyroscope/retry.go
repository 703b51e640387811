package pyroscope

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// outcome classifies the result of one push request.
type outcome struct {
	cause     string        // "" on success; else a short stable name such as "http_503"
	retry     bool          // a later attempt may succeed
	notBefore time.Duration // server's Retry-After, 0 if none
}

// classify turns a push error and what the transport saw into an outcome.
// now is used to evaluate a Retry-After given as an HTTP date.
func classify(err error, a *attempt, now time.Time) outcome {
	if err == nil {
		return outcome{}
	}
	if a.status != 0 && a.status != http.StatusOK {
		o := outcome{cause: "http_" + strconv.Itoa(a.status)}
		switch {
		case a.status == http.StatusRequestTimeout, a.status == http.StatusTooManyRequests,
			a.status == 499, // "client closed request": the request was cut, not refused
			a.status >= 500:
			o.retry = true
		}
		if a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable {
			o.notBefore = parseRetryAfter(a.retryAfter, now)
		}
		return o
	}
	var (
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		recordHd tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr),
		errors.As(err, &invalid), errors.As(err, &recordHd):
		// Usually configuration, but certificates get rotated: keep trying.
		return outcome{cause: "tls", retry: true}
	case errors.Is(err, context.DeadlineExceeded):
		return outcome{cause: "timeout", retry: true}
	case errors.Is(err, context.Canceled):
		return outcome{cause: "canceled", retry: true}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return outcome{cause: "timeout", retry: true}
	}
	if a.status == http.StatusOK {
		// The server answered 200 but the answer was not a valid
		// Connect response (a proxy, or a wrong URL path on some
		// other HTTP server).
		return outcome{cause: "bad_response", retry: false}
	}
	return outcome{cause: "network", retry: true}
}

// parseRetryAfter parses a Retry-After value: delay-seconds or an HTTP date.
// It returns 0 for a missing or malformed value.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// backoff returns the wait before retry number n (0 for the first retry):
// full jitter over an exponentially growing ceiling.
func backoff(n int, min, max time.Duration) time.Duration {
	ceil := min
	for i := 0; i < n && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}
