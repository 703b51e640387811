package pyroscope

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config configures an Exporter. The zero value of every field but URL
// selects a default.
type Config struct {
	// URL is the server's base URL, e.g. http://localhost:4040 or
	// https://profiles-prod-001.grafana.net. User information in the URL
	// (https://user:token@host) is used as basic auth and removed from the
	// URL.
	URL string

	// BasicAuthUser and BasicAuthPassword set HTTP basic auth (for Grafana
	// Cloud: the stack's user id and an access token).
	BasicAuthUser     string
	BasicAuthPassword string
	// BearerToken sets "Authorization: Bearer <token>". It cannot be
	// combined with basic auth.
	BearerToken string
	// TenantID, if set, is sent in the X-Scope-OrgID header.
	TenantID string
	// Headers are extra HTTP headers sent with every request.
	Headers map[string]string

	// CAFile is a PEM file of certificate authorities trusted in addition
	// to the system's.
	CAFile string
	// InsecureSkipVerify disables verification of the server's certificate.
	InsecureSkipVerify bool

	// Timeout bounds one push request. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a failed
	// request: before retry n the exporter waits a random time in
	// [0, min(MaxBackoff, MinBackoff*2^n)). Defaults 500ms and 30s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxRetryAfter caps how long a server's Retry-After can make the
	// exporter wait. Default 5m.
	MaxRetryAfter time.Duration
	// FlushTimeout bounds how long Run keeps sending after its context is
	// cancelled. Default 5s.
	FlushTimeout time.Duration

	// QueueBytes bounds the serialized size of the windows the exporter
	// holds (queued or being sent). Default 16 MiB. A window evicted while
	// its request is in flight is freed when the request ends, so memory
	// peaks at QueueBytes plus one batch.
	QueueBytes int64
	// BatchBytes bounds the size of one push request; windows are batched
	// up to this size. Default 1 MiB. A single larger window is sent alone.
	BatchBytes int64
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, 10*time.Second)
	def(&c.MinBackoff, 500*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	def(&c.MaxRetryAfter, 5*time.Minute)
	def(&c.FlushTimeout, 5*time.Second)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 16 << 20
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 1 << 20
	}
}

// parseURL validates c.URL and moves any user information into basic auth.
func (c *Config) parseURL() (string, error) {
	if c.URL == "" {
		return "", errors.New("pyroscope: no server URL")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url's error quotes the URL, which may hold a password.
		return "", errors.New("pyroscope: server URL is malformed")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("pyroscope: server URL scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("pyroscope: server URL has no host")
	}
	if u.User != nil {
		if c.BasicAuthUser != "" || c.BasicAuthPassword != "" {
			return "", errors.New("pyroscope: basic auth given both in the URL and in the config")
		}
		c.BasicAuthUser = u.User.Username()
		c.BasicAuthPassword, _ = u.User.Password()
		u.User = nil
	}
	if c.BearerToken != "" && (c.BasicAuthUser != "" || c.BasicAuthPassword != "") {
		return "", errors.New("pyroscope: bearer token and basic auth are mutually exclusive")
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return "", fmt.Errorf("pyroscope: invalid header name %q", k)
		}
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// httpClient builds the HTTP client: TLS settings plus a transport that adds
// the auth and extra headers.
func (c *Config) httpClient() (*http.Client, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("pyroscope: reading CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pyroscope: CA file %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	base.TLSClientConfig = tc
	h := make(http.Header)
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	if c.TenantID != "" {
		h.Set("X-Scope-OrgID", c.TenantID)
	}
	if c.BearerToken != "" {
		h.Set("Authorization", "Bearer "+c.BearerToken)
	}
	t := &transport{base: base, headers: h}
	if c.BasicAuthUser != "" || c.BasicAuthPassword != "" {
		t.user, t.password, t.basic = c.BasicAuthUser, c.BasicAuthPassword, true
	}
	// No client-wide timeout: each attempt has its own context deadline.
	return &http.Client{Transport: t}, nil
}

// transport adds the auth and extra headers to each request.
type transport struct {
	base           http.RoundTripper
	headers        http.Header
	basic          bool
	user, password string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context()) // a RoundTripper must not modify its argument
	for k, v := range t.headers {
		req.Header[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	if t.basic {
		req.SetBasicAuth(t.user, t.password)
	}
	return t.base.RoundTrip(req)
}
