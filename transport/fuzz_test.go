package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// capturing returns a Dispatcher that answers every procedure with a valid
// zero response and stores the decoded request in *got.
func capturing(got *any) *leasetest.FakeDispatcher {
	return &leasetest.FakeDispatcher{
		EnqueueFn: func(_ context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
			*got = r
			return &resourcelease.EnqueueResponse{}, nil
		},
		LeaseFn: func(_ context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			*got = r
			return nil, nil
		},
		HeartbeatFn: func(_ context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			*got = r
			return &resourcelease.HeartbeatResponse{}, nil
		},
		CompleteFn: func(_ context.Context, r *resourcelease.CompleteRequest) error {
			*got = r
			return nil
		},
		FailFn: func(_ context.Context, r *resourcelease.FailRequest) error {
			*got = r
			return nil
		},
		DrainFn: func(_ context.Context, r *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			*got = r
			return &resourcelease.DrainResponse{}, nil
		},
		RestoreFn: func(_ context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
			*got = r
			return &resourcelease.RestoreResponse{}, nil
		},
		StatsFn: func(_ context.Context, r *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			*got = r
			return &resourcelease.Stats{}, nil
		},
		DeadLettersFn: func(_ context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
			*got = r
			return &resourcelease.DeadLettersResponse{}, nil
		},
		EnqueueBatchFn: func(_ context.Context, r *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
			*got = r
			return &resourcelease.EnqueueBatchResponse{Results: make([]resourcelease.EnqueueItemResult, len(r.Payloads))}, nil
		},
		LeaseBatchFn: func(_ context.Context, r *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
			*got = r
			return nil, nil
		},
		HeartbeatBatchFn: func(_ context.Context, r *resourcelease.HeartbeatBatchRequest) ([]resourcelease.HeartbeatResult, error) {
			*got = r
			return make([]resourcelease.HeartbeatResult, len(r.OwnershipTokens)), nil
		},
		CompleteBatchFn: func(_ context.Context, r *resourcelease.CompleteBatchRequest) ([]error, error) {
			*got = r
			return make([]error, len(r.OwnershipTokens)), nil
		},
		ReleaseFn: func(_ context.Context, r *resourcelease.ReleaseRequest) error {
			*got = r
			return nil
		},
		RedriveFn: func(_ context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
			*got = r
			return &resourcelease.RedriveResponse{}, nil
		},
		PurgeFn: func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
			*got = r
			return &resourcelease.PurgeResponse{}, nil
		},
	}
}

// FuzzDecodeRequest feeds arbitrary bodies to every procedure. The handler
// must answer 200 or a well-formed invalid-argument error (never internal,
// never a panic), and what it hands the Dispatcher must be valid for the verb
// and survive another encode/decode unchanged. Seeds are in
// testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	for i := range transport.Verbs() {
		f.Add(uint8(i), []byte(`{}`))
		f.Add(uint8(i), []byte(`{"payload":`+itemJSON+`,"ownershipToken":`+tokenJSON+`,"waitMs":5,"limit":2,"sequenceIds":[1],"items":[{"payload":`+itemJSON+`}]}`))
		f.Add(uint8(i), []byte(`{"payloads":[`+itemJSON+`,{}],"ownershipTokens":[`+tokenJSON+`],"maxItems":3,"maxBytes":10,"delayMs":7,"all":true}`))
	}
	const maxWait = 2 * time.Second
	verbs := transport.Verbs()
	f.Fuzz(func(t *testing.T, verbIndex uint8, body []byte) {
		verb := verbs[int(verbIndex)%len(verbs)]
		var got any
		h, err := transport.NewHandler(capturing(&got), transport.HandlerConfig{MaxWait: maxWait, Logger: quietLogger, Authorize: transport.AllowAll})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set(transport.HeaderProcedure, transport.Procedure("", verb))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("%s %q: HTTP %d, want 200 or 400: %s", verb, body, rec.Code, rec.Body)
			}
			var we wireError
			if err := json.Unmarshal(rec.Body.Bytes(), &we); err != nil || we.Status != string(resourcelease.StatusInvalidArgument) || we.Code == "" {
				t.Fatalf("%s %q: malformed error %s (%v)", verb, body, rec.Body, err)
			}
			if got != nil {
				t.Fatalf("%s %q: refused, yet the dispatcher was called", verb, body)
			}
			return
		}
		if got == nil {
			t.Fatalf("%s %q: 200 without calling the dispatcher", verb, body)
		}
		switch r := got.(type) {
		case *resourcelease.EnqueueRequest:
			if err := r.Payload.Validate(); err != nil {
				t.Fatalf("invalid payload reached the dispatcher: %v", err)
			}
		case *resourcelease.LeaseRequest:
			if r.Wait < 0 || r.Wait > maxWait {
				t.Fatalf("wait %v outside [0, %v]", r.Wait, maxWait)
			}
		case *resourcelease.HeartbeatRequest:
			requireToken(t, &r.OwnershipToken)
		case *resourcelease.CompleteRequest:
			requireToken(t, &r.OwnershipToken)
		case *resourcelease.FailRequest:
			requireToken(t, &r.OwnershipToken)
		case *resourcelease.ReleaseRequest:
			requireToken(t, &r.OwnershipToken)
			if r.Delay < 0 {
				t.Fatalf("negative delay %v reached the dispatcher", r.Delay)
			}
		case *resourcelease.EnqueueBatchRequest:
			if len(r.Payloads) > resourcelease.MaxBatchItems {
				t.Fatalf("a batch of %d reached the dispatcher", len(r.Payloads))
			}
		case *resourcelease.LeaseBatchRequest:
			if r.MaxItems < 1 || r.MaxItems > resourcelease.MaxBatchItems || r.Wait < 0 || r.Wait > maxWait || r.MaxBytes < 0 {
				t.Fatalf("a bad leaseBatch reached the dispatcher: %+v", r)
			}
		case *resourcelease.HeartbeatBatchRequest:
			if len(r.OwnershipTokens) > resourcelease.MaxBatchItems {
				t.Fatalf("a batch of %d reached the dispatcher", len(r.OwnershipTokens))
			}
		case *resourcelease.CompleteBatchRequest:
			if len(r.OwnershipTokens) > resourcelease.MaxBatchItems {
				t.Fatalf("a batch of %d reached the dispatcher", len(r.OwnershipTokens))
			}
		case *resourcelease.RedriveRequest:
			if err := r.Validate(); err != nil {
				t.Fatalf("an empty redrive reached the dispatcher: %v", err)
			}
		case *resourcelease.PurgeRequest:
			if err := r.Validate(); err != nil {
				t.Fatalf("an empty purge reached the dispatcher: %v", err)
			}
		}
		// encode(decode(encode(x))) == encode(x)
		once, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encoding %T: %v", got, err)
		}
		again := newLike(got)
		if err := json.Unmarshal(once, again); err != nil {
			t.Fatalf("decoding our own encoding %s: %v", once, err)
		}
		twice, _ := json.Marshal(again)
		if !bytes.Equal(once, twice) {
			t.Fatalf("not stable:\n%s\n%s", once, twice)
		}
	})
}

func requireToken(t *testing.T, tok *resourcelease.OwnershipToken) {
	t.Helper()
	if tok == nil || tok.IsZero() {
		t.Fatalf("a missing token reached the dispatcher")
	}
}

// newLike returns a new zero value of v's pointed-to type.
func newLike(v any) any {
	switch v.(type) {
	case *resourcelease.EnqueueRequest:
		return new(resourcelease.EnqueueRequest)
	case *resourcelease.LeaseRequest:
		return new(resourcelease.LeaseRequest)
	case *resourcelease.HeartbeatRequest:
		return new(resourcelease.HeartbeatRequest)
	case *resourcelease.CompleteRequest:
		return new(resourcelease.CompleteRequest)
	case *resourcelease.FailRequest:
		return new(resourcelease.FailRequest)
	case *resourcelease.ReleaseRequest:
		return new(resourcelease.ReleaseRequest)
	case *resourcelease.EnqueueBatchRequest:
		return new(resourcelease.EnqueueBatchRequest)
	case *resourcelease.LeaseBatchRequest:
		return new(resourcelease.LeaseBatchRequest)
	case *resourcelease.HeartbeatBatchRequest:
		return new(resourcelease.HeartbeatBatchRequest)
	case *resourcelease.CompleteBatchRequest:
		return new(resourcelease.CompleteBatchRequest)
	case *resourcelease.DrainRequest:
		return new(resourcelease.DrainRequest)
	case *resourcelease.RestoreRequest:
		return new(resourcelease.RestoreRequest)
	case *resourcelease.StatsRequest:
		return new(resourcelease.StatsRequest)
	case *resourcelease.DeadLettersRequest:
		return new(resourcelease.DeadLettersRequest)
	case *resourcelease.RedriveRequest:
		return new(resourcelease.RedriveRequest)
	case *resourcelease.PurgeRequest:
		return new(resourcelease.PurgeRequest)
	}
	panic("unexpected request type")
}

// FuzzHeaders feeds arbitrary procedure, service, encoding, TTL and deadline
// headers to a handler (Service "mesh", MaxTTL 1h). It must never panic or
// answer internal; a request it accepts must have met every header rule, and
// its context's deadline must lie within MaxTTL. Seeds are in
// testdata/fuzz/FuzzHeaders.
func FuzzHeaders(f *testing.F) {
	f.Add("resourcelease::stats", "", "", "", "", "")
	f.Add("resourcelease::stats", "mesh", "json", "1500", "", "")
	f.Add("resourcelease::stats", "", "application/json; charset=utf-8", "", "2500", "2030-01-01T00:00:00Z")
	f.Add("resourcelease::nope", "other", "proto", "-1", "0", "yesterday")
	f.Add("resourcelease::stats", "", "", "9223372036854775807", "", "")
	f.Add("resourcelease::stats", "", "", "", "", "9999-12-31T23:59:59.999999999+14:00")
	const maxTTL = time.Hour
	f.Fuzz(func(t *testing.T, procedure, service, encoding, ttl, ctxTTL, deadline string) {
		var dl time.Time
		var called bool
		h, err := transport.NewHandler(&leasetest.FakeDispatcher{StatsFn: func(ctx context.Context, _ *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			called = true
			d, ok := ctx.Deadline()
			if !ok {
				t.Fatal("no deadline on the dispatcher's context")
			}
			dl = d
			return &resourcelease.Stats{}, nil
		}}, transport.HandlerConfig{Service: "mesh", MaxTTL: maxTTL, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		for name, v := range map[string]string{
			transport.HeaderProcedure: procedure, transport.HeaderService: service, transport.HeaderEncoding: encoding,
			transport.HeaderTTLMs: ttl, transport.HeaderContextTTLMs: ctxTTL, transport.HeaderDeadline: deadline,
		} {
			if v != "" {
				req.Header.Set(name, v)
			}
		}
		before := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := time.Now()

		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusGatewayTimeout:
		default:
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			if called {
				t.Fatal("refused, yet the dispatcher was called")
			}
			if st := resourcelease.Status(rec.Header().Get(transport.HeaderStatus)); !st.Valid() || st.HTTPStatus() != rec.Code {
				t.Fatalf("Rpc-Status %q does not match HTTP %d", st, rec.Code)
			}
			return
		}
		if !called {
			t.Fatal("200 without calling the dispatcher")
		}
		if got := req.Header.Get(transport.HeaderProcedure); got != "resourcelease::stats" {
			t.Fatalf("procedure %q accepted", got)
		}
		if s := req.Header.Get(transport.HeaderService); s != "" && s != "mesh" {
			t.Fatalf("service %q accepted", s)
		}
		if e := strings.ToLower(strings.TrimSpace(strings.SplitN(req.Header.Get(transport.HeaderEncoding), ";", 2)[0])); e != "" && e != "json" && e != "application/json" {
			t.Fatalf("encoding %q accepted", e)
		}
		for _, name := range []string{transport.HeaderTTLMs, transport.HeaderContextTTLMs} {
			if v := req.Header.Get(name); v != "" {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil || n <= 0 {
					t.Fatalf("%s %q accepted", name, v)
				}
			}
		}
		if dl.After(after.Add(maxTTL)) {
			t.Fatalf("deadline %v beyond MaxTTL", dl)
		}
		if dl.Before(before.Add(-time.Second)) && rec.Code == http.StatusOK {
			t.Fatalf("deadline %v already passed, yet the call was made", dl)
		}
	})
}
