package deterministic_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

func TestVersionGateDecide(t *testing.T) {
	type decide struct {
		change       string
		version      int64
		payload      string
		wantConflict bool
	}
	for _, kind := range storeKinds {
		for _, tc := range []struct {
			name  string
			steps []decide
			// want is the decided version and payload per change id afterwards.
			want map[string]decide
		}{
			{"first decision wins", []decide{
				{change: "c", version: 3, payload: "v3"},
			}, map[string]decide{"c": {version: 3, payload: "v3"}}},
			{"same version is idempotent and keeps the first payload", []decide{
				{change: "c", version: 3, payload: "v3"},
				{change: "c", version: 3, payload: "other payload"},
				{change: "c", version: 3},
			}, map[string]decide{"c": {version: 3, payload: "v3"}}},
			{"different version conflicts", []decide{
				{change: "c", version: 3, payload: "v3"},
				{change: "c", version: 4, payload: "v4", wantConflict: true},
				{change: "c", version: 2, wantConflict: true},
				{change: "c", version: 0, wantConflict: true},
				{change: "c", version: 3},
			}, map[string]decide{"c": {version: 3, payload: "v3"}}},
			{"change ids are independent", []decide{
				{change: "a", version: 1, payload: "a1"},
				{change: "b", version: 2, payload: "b2"},
				{change: "a", version: 2, wantConflict: true},
				{change: "b", version: 1, wantConflict: true},
			}, map[string]decide{"a": {version: 1, payload: "a1"}, "b": {version: 2, payload: "b2"}}},
			{"zero and negative versions are versions too", []decide{
				{change: "z", version: 0, payload: "zero"},
				{change: "n", version: -5},
				{change: "z", version: 1, wantConflict: true},
			}, map[string]decide{"z": {version: 0, payload: "zero"}, "n": {version: -5}}},
		} {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				g, err := deterministic.NewVersionGate(deterministic.GateConfig{Store: kind.new(t), Clock: leasetest.NewManualClock(t0)})
				if err != nil {
					t.Fatal(err)
				}
				for i, st := range tc.steps {
					err := g.Decide(ctx, st.change, st.version, []byte(st.payload))
					if st.wantConflict {
						if !errors.Is(err, deterministic.ErrVersionConflict) {
							t.Fatalf("step %d: Decide(%q, %d) = %v, want a version conflict", i, st.change, st.version, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("step %d: Decide(%q, %d) = %v, want nil", i, st.change, st.version, err)
					}
				}
				for change, want := range tc.want {
					rec, ok, err := g.Current(ctx, change)
					if err != nil || !ok {
						t.Fatalf("Current(%q) = %v, %v; want a decision", change, ok, err)
					}
					if rec.Version != want.version || string(rec.Payload) != want.payload || rec.Kind != deterministic.DefaultGateKind || !rec.RecordedAt.Equal(t0) {
						t.Fatalf("Current(%q) = %+v, want version %d payload %q kind %q at %v", change, rec, want.version, want.payload, deterministic.DefaultGateKind, t0)
					}
				}
				if _, ok, err := g.Current(ctx, "never-decided"); err != nil || ok {
					t.Fatalf("Current(never-decided) = %v, %v; want none", ok, err)
				}
			})
		}
	}
}

func TestVersionGateConflictError(t *testing.T) {
	ctx := context.Background()
	g, err := deterministic.NewVersionGate(deterministic.GateConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Decide(ctx, "schema", 41, nil); err != nil {
		t.Fatal(err)
	}
	err = g.Decide(ctx, "schema", 42, nil)
	var e *resourcelease.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %T %v, want *resourcelease.Error", err, err)
	}
	if e.Status != resourcelease.StatusAlreadyExists || e.Code != deterministic.CodeVersionConflict {
		t.Fatalf("status/code = %s/%s, want already-exists/%s", e.Status, e.Code, deterministic.CodeVersionConflict)
	}
	if e.Status.HTTPStatus() != 409 {
		t.Fatalf("HTTP status = %d, want 409", e.Status.HTTPStatus())
	}
	for _, want := range []string{`"schema"`, "41", "42"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q does not contain %s", e.Message, want)
		}
	}
	wantMeta := map[string]string{"changeId": "schema", "currentVersion": "41", "proposedVersion": "42"}
	for k, v := range wantMeta {
		if e.Metadata[k] != v {
			t.Errorf("metadata[%q] = %q, want %q", k, e.Metadata[k], v)
		}
	}
	// The sentinel also matches the error rebuilt from the wire (code only).
	wire := &resourcelease.Error{Status: e.Status, Code: e.Code, Message: e.Message}
	if !errors.Is(wire, deterministic.ErrVersionConflict) {
		t.Error("a conflict decoded from the wire does not match ErrVersionConflict")
	}
}

func TestVersionGateConcurrentLosersConflict(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			g, err := deterministic.NewVersionGate(deterministic.GateConfig{Store: kind.new(t)})
			if err != nil {
				t.Fatal(err)
			}
			// Half the callers propose version 1, half version 2: one version
			// is decided, all its proposers succeed, all the others conflict.
			const callers = 16
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  = make([]error, callers)
			)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = g.Decide(context.Background(), "race", int64(1+i%2), []byte{byte(i)})
				}()
			}
			close(start)
			wg.Wait()
			rec, ok, err := g.Current(context.Background(), "race")
			if err != nil || !ok {
				t.Fatalf("Current = %v, %v", ok, err)
			}
			if int(rec.Payload[0])%2+1 != int(rec.Version) {
				t.Fatalf("decided version %d with the payload of a caller proposing another", rec.Version)
			}
			for i, err := range errs {
				proposed := int64(1 + i%2)
				switch {
				case proposed == rec.Version && err != nil:
					t.Errorf("caller %d proposed the decided version %d: err = %v, want nil", i, proposed, err)
				case proposed != rec.Version && !errors.Is(err, deterministic.ErrVersionConflict):
					t.Errorf("caller %d proposed %d against decided %d: err = %v, want a conflict", i, proposed, rec.Version, err)
				}
			}
		})
	}
}

func TestVersionGateErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := deterministic.NewVersionGate(deterministic.GateConfig{}); !errors.Is(err, resourcelease.ErrInvalidArgument) {
		t.Fatalf("NewVersionGate without a store: err = %v, want invalid-argument", err)
	}
	failing := func(get, tryAdd bool) resourcelease.StateStore {
		s := &funcStore{base: deterministic.NewMemoryStore()}
		if get {
			s.get = func(context.Context, string) (resourcelease.Record, bool, error) {
				return resourcelease.Record{}, false, errBoom
			}
		}
		if tryAdd {
			s.tryAdd = func(context.Context, string, resourcelease.Record) (bool, error) { return false, errBoom }
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		store   resourcelease.StateStore
		call    func(g *deterministic.VersionGate) error
		wantErr error
	}{
		{"blank change id", deterministic.NewMemoryStore(),
			func(g *deterministic.VersionGate) error { return g.Decide(ctx, "", 1, nil) }, resourcelease.ErrInvalidArgument},
		{"blank change id on Current", deterministic.NewMemoryStore(),
			func(g *deterministic.VersionGate) error { _, _, err := g.Current(ctx, " \t"); return err }, resourcelease.ErrInvalidArgument},
		{"try-add fails", failing(false, true),
			func(g *deterministic.VersionGate) error { return g.Decide(ctx, "c", 1, nil) }, errBoom},
		{"get of the decision fails", failing(true, false),
			func(g *deterministic.VersionGate) error {
				if err := g.Decide(ctx, "c", 1, nil); err != nil {
					return errors.New("first decide failed: " + err.Error())
				}
				return g.Decide(ctx, "c", 2, nil)
			}, errBoom},
		{"current fails", failing(true, false),
			func(g *deterministic.VersionGate) error { _, _, err := g.Current(ctx, "c"); return err }, errBoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := deterministic.NewVersionGate(deterministic.GateConfig{Store: tc.store})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(g)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == errBoom && !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("store failure %v is not storage unavailable", err)
			}
		})
	}
}
