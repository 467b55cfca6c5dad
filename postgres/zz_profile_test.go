package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
)

func TestZZProfile(t *testing.T) {
	srv := pgtest.NewServer(t)
	ctx := context.Background()
	if err := srv.Exec(ctx, `ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Start()
	url := srv.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1})
	if _, err := q.Store().Pool().Exec(ctx, `CREATE EXTENSION pg_stat_statements`); err != nil {
		t.Fatal(err)
	}
	q.Store().Pool().Exec(ctx, `SELECT pg_stat_statements_reset()`)
	var wg sync.WaitGroup
	start := time.Now()
	n := 0
	var mu sync.Mutex
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 5*time.Second {
				if _, err := q.Enqueue(ctx, benchItem(w)); err != nil {
					t.Error(err)
					return
				}
				l, err := leaseOne(ctx, q, "w")
				if err != nil {
					t.Error(err)
					return
				}
				if err := q.Complete(ctx, l.OwnershipToken); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d cycles in %v: %.0f/s", n, time.Since(start), float64(n)/time.Since(start).Seconds())
	rows, err := q.Store().Pool().Query(ctx, `SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var calls, nrows int64
		var total, mean float64
		var qs string
		rows.Scan(&calls, &total, &mean, &nrows, &qs)
		t.Log(fmt.Sprintf("%7d %9.1fms %7.3fms %8d %s", calls, total, mean, nrows, qs))
	}
}
