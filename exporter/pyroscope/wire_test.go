package pyroscope

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	"google.golang.org/protobuf/proto"
)

// TestEncodePushRequest decodes our encoding with Pyroscope's generated
// types: every series, label and sample comes back as it went in.
func TestEncodePushRequest(t *testing.T) {
	in := []*series{
		{labels: []labelPair{{"__name__", "process_cpu"}, {"service_name", "svc"}, {"pid", "42"}}, raw: []byte{0x1f, 0x8b, 1, 2, 3}, id: "id-1"},
		{labels: []labelPair{{"service_name", strings.Repeat("é", 300)}}, raw: make([]byte, 70_000), id: ""},
		{raw: nil, id: "no-labels"},
	}
	var got pushv1.PushRequest
	if err := proto.Unmarshal(encodePushRequest(in), &got); err != nil {
		t.Fatalf("Pyroscope's PushRequest does not decode our encoding: %v", err)
	}
	if len(got.Series) != len(in) {
		t.Fatalf("%d series decoded, sent %d", len(got.Series), len(in))
	}
	for i, s := range got.Series {
		want := in[i]
		if len(s.Labels) != len(want.labels) {
			t.Errorf("series %d: %d labels, want %d", i, len(s.Labels), len(want.labels))
			continue
		}
		for j, l := range s.Labels {
			if l.Name != want.labels[j].name || l.Value != want.labels[j].value {
				t.Errorf("series %d label %d: %s=%q, want %s=%q", i, j, l.Name, l.Value, want.labels[j].name, want.labels[j].value)
			}
		}
		if len(s.Samples) != 1 || string(s.Samples[0].RawProfile) != string(want.raw) || s.Samples[0].ID != want.id {
			t.Errorf("series %d: samples %d, want one of %d bytes with ID %q", i, len(s.Samples), len(want.raw), want.id)
		}
	}
	if b := encodePushRequest(nil); len(b) != 0 {
		t.Errorf("an empty request encodes to %d bytes", len(b))
	}
}

// TestPushAnswers checks how push reads what a server answers: a Connect
// error names its code and message, and a 200 that is not a Connect
// response is an error, not a delivery.
func TestPushAnswers(t *testing.T) {
	path, h := pushvHandler(t, connect.NewError(connect.CodeInvalidArgument, errors.New("series 3: invalid labels")))
	mux := http.NewServeMux()
	mux.Handle(path, h)
	mux.HandleFunc("/html/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html>login</html>"))
	})
	mux.HandleFunc("/teapot/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "short and stout", http.StatusTeapot)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := encodePushRequest([]*series{{labels: []labelPair{{"service_name", "s"}}, raw: []byte{1}}})

	for _, c := range []struct {
		url, cause, msg string
	}{
		{srv.URL + pushPath, "http_400", "invalid_argument: series 3: invalid labels"},
		{srv.URL + "/html" + pushPath, "bad_response", `"text/html"`},
		{srv.URL + "/teapot" + pushPath, "http_418", "short and stout"},
	} {
		a, err := push(ctx, srv.Client(), c.url, body)
		o := classify(err, &a, time.Now())
		if err == nil || o.cause != c.cause || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: cause %q, err %v; want cause %q and an error saying %q", c.url, o.cause, err, c.cause, c.msg)
		}
	}
}

// pushvHandler is Pyroscope's generated push handler, answering every
// request with err.
func pushvHandler(t *testing.T, err error) (string, http.Handler) {
	r := &receiver{t: t}
	r.setFault(func(int, *pushv1.PushRequest) error { return err })
	return pushv1connect.NewPusherServiceHandler(r)
}
