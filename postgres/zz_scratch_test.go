package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/leasemesh/leasemesh/internal/pgtest"
)

func BenchmarkZZStatements(b *testing.B) {
	url := pgtest.NewDatabase(b)
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		b.Fatal(err)
	}
	rows, err := c.Query(context.Background(), `SELECT calls, round(total_exec_time::numeric,1), round(mean_exec_time::numeric,3), round(max_exec_time::numeric,1)::int8, round(total_plan_time::numeric,1), left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements WHERE calls > 500 ORDER BY total_exec_time DESC LIMIT 25`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var calls, r int64
		var tot, mean, plan float64
		var q string
		if err := rows.Scan(&calls, &tot, &mean, &r, &plan, &q); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "%8d %9.1f %7.3f %8d %7.1f %s\n", calls, tot, mean, r, plan, q)
	}
}
