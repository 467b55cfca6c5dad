package replication_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// commitSizes reads replication_commit_batch_size: how many commits there
// were and how many changes they held.
func commitSizes(t *testing.T, reg *prometheus.Registry) (commits uint64, changes float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "replication_commit_batch_size" {
			var h *dto.Histogram = mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no replication_commit_batch_size")
	return 0, 0
}

// TestBatchProceduresCommitOnce: each batch procedure of a LocalDispatcher
// over the SQLite replicator is one transaction, however many items it
// holds, and survives a restart.
func TestBatchProceduresCommitOnce(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/replication.db"
	db := openDB(t, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	r := newSQLite(t, db, replication.SQLiteConfig{Path: path})
	reg := prometheus.NewRegistry()
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Replicator: r, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	payloads := make([]resourcelease.Item, n)
	for i := range payloads {
		payloads[i] = item(fmt.Sprint("b", i), "")
	}
	step := func(name string, wantChanges int, call func() error) {
		t.Helper()
		c0, s0 := commitSizes(t, reg)
		if err := call(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c1, s1 := commitSizes(t, reg)
		if c1-c0 != 1 || int(s1-s0) != wantChanges {
			t.Fatalf("%s: %d commits of %v changes, want 1 of %d", name, c1-c0, s1-s0, wantChanges)
		}
	}
	step("enqueueBatch", n, func() error {
		resp, err := d.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
		if err == nil && resp.Stats.PendingCount != n {
			err = fmt.Errorf("pending %d", resp.Stats.PendingCount)
		}
		return err
	})
	var leases []*resourcelease.Lease
	step("leaseBatch", n, func() (err error) {
		leases, err = d.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: n})
		if err == nil && len(leases) != n {
			err = fmt.Errorf("%d leases", len(leases))
		}
		return err
	})
	tokens := make([]resourcelease.OwnershipToken, n)
	for i, l := range leases {
		tokens[i] = l.OwnershipToken
	}
	step("heartbeatBatch", n, func() error {
		_, err := d.HeartbeatBatch(ctx, &resourcelease.HeartbeatBatchRequest{OwnershipTokens: tokens})
		return err
	})
	step("completeBatch", n/2, func() error {
		errs, err := d.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: tokens[:n/2]})
		for _, e := range errs {
			if e != nil {
				return e
			}
		}
		return err
	})
	d.Close()
	r.Close()

	r = newSQLite(t, db, replication.SQLiteConfig{Path: path})
	st, err := r.LoadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 0 || len(st.Leased) != n/2 {
		t.Fatalf("after a restart: %d pending, %d leased; want 0 and %d", len(st.Pending), len(st.Leased), n/2)
	}
	for i, l := range st.Leased {
		if l.Token != tokens[n/2+i] {
			t.Fatalf("lease %d: %v, want %v", i, l.Token, tokens[n/2+i])
		}
	}
}
