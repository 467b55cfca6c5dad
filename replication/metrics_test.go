package replication_test

import (
	"context"
	"errors"
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gathered indexes a registry's metrics by name and label set.
type gathered map[string][]*dto.Metric

func gather(t *testing.T, reg *prometheus.Registry) gathered {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := gathered{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf.GetMetric()
	}
	return g
}

// find returns the metric named name whose labels include want.
func (g gathered) find(name string, want map[string]string) *dto.Metric {
	for _, m := range g[name] {
		ok := true
		for k, v := range want {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			return m
		}
	}
	return nil
}

// TestMetrics registers two replicators (distinguished by MetricLabels) in a
// pedantic registry and checks every metric after a known workload.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	sq := newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{MetricLabels: prometheus.Labels{"store": "sqlite"}})
	mem := newMemory(t, replication.MemoryConfig{MetricLabels: prometheus.Labels{"store": "memory"}})
	reg.MustRegister(sq, mem)

	failed := false
	flaky := sinkFunc(func(_ context.Context, e resourcelease.Event) error {
		if !failed {
			failed = true
			return errors.New("flaky")
		}
		return nil
	})
	if err := sq.AddSink("flaky", flaky, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	kinds := []resourcelease.ChangeKind{resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, resourcelease.ChangeCompleted, resourcelease.ChangeEnqueued}
	for i, k := range kinds {
		err := wait(sq.Record(replicatortest.Change(k, 1, i)))
		if (i == 0) != (err != nil) {
			t.Fatalf("Ack %d: %v (only the first should fail)", i, err)
		}
		if err := wait(mem.Record(replicatortest.Change(k, 1, i))); err != nil {
			t.Fatal(err)
		}
	}
	g := gather(t, reg)
	for _, store := range []string{"sqlite", "memory"} {
		for typ, want := range map[string]float64{"Enqueue": 2, "LeaseGranted": 1, "Completed": 1, "Heartbeat": 0} {
			m := g.find("replication_events_total", map[string]string{"store": store, "event_type": typ})
			if m == nil || m.GetCounter().GetValue() != want {
				t.Fatalf("%s replication_events_total{event_type=%q} = %v, want %v", store, typ, m, want)
			}
		}
		if m := g.find("replication_last_sequence", map[string]string{"store": store}); m == nil || m.GetGauge().GetValue() != 4 {
			t.Fatalf("%s replication_last_sequence = %v, want 4", store, m)
		}
	}
	if m := g.find("replication_commit_batch_size", map[string]string{"store": "sqlite"}); m == nil || m.GetHistogram().GetSampleCount() != 4 || m.GetHistogram().GetSampleSum() != 4 {
		t.Fatalf("replication_commit_batch_size = %v, want 4 batches of 1", m)
	}
	if m := g.find("replication_sink_failures_total", map[string]string{"store": "sqlite", "sink": "flaky"}); m == nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("replication_sink_failures_total{sink=flaky} = %v, want 1", m)
	}
	if m := g.find("replication_sink_lag_seconds", map[string]string{"store": "sqlite", "sink": "flaky"}); m == nil || m.GetHistogram().GetSampleCount() != 4 {
		t.Fatalf("replication_sink_lag_seconds{sink=flaky} = %v, want 4 observations", m)
	}
}

// TestMaxBatch: a batch never holds more than MaxBatch changes; the rest
// commit in the next transactions, in order.
func TestMaxBatch(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r := newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{MaxBatch: 2})
	reg.MustRegister(r)
	blocked, release := make(chan struct{}), make(chan struct{})
	first := true
	if err := r.AddSink("gate", sinkFunc(func(context.Context, resourcelease.Event) error {
		if first {
			first = false
			close(blocked)
			<-release
		}
		return nil
	}), resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	acks := []resourcelease.Ack{r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))}
	<-blocked
	for i := 2; i <= 6; i++ { // 5 changes: batches of 2, 2, 1
		acks = append(acks, r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i), i)))
	}
	close(release)
	for _, a := range acks {
		if err := wait(a); err != nil {
			t.Fatal(err)
		}
	}
	m := gather(t, reg).find("replication_commit_batch_size", nil)
	if h := m.GetHistogram(); h.GetSampleCount() != 4 || h.GetSampleSum() != 6 {
		t.Fatalf("%d commits of %v changes, want 4 commits (1, 2, 2, 1)", h.GetSampleCount(), h.GetSampleSum())
	}
	if r.LastSequence() != 6 {
		t.Fatalf("LastSequence = %d", r.LastSequence())
	}
}
