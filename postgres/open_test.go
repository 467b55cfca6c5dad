package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// schemaTables are the tables the migrations create, and
// schema_migrations.
var schemaTables = []string{"dedupe", "events", "items", "partition_dirty", "partitions", "peers", "queue_state", "schema_migrations", "state_records"}

func tablesIn(t *testing.T, s *postgres.Store, schema string) []string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func queryInt(t *testing.T, s *postgres.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestOpenCreatesTheSchema(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if got := strings.Join(tablesIn(t, s, "leasemesh"), ","); got != strings.Join(schemaTables, ",") {
		t.Errorf("tables in schema leasemesh: %s, want %s", got, strings.Join(schemaTables, ","))
	}
	v, err := s.SchemaVersion(context.Background())
	if err != nil || v != postgres.LatestSchemaVersion() || v < 1 {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, postgres.LatestSchemaVersion())
	}
	if n := queryInt(t, s, `SELECT count(*) FROM leasemesh.queue_state`); n != 1 {
		t.Errorf("queue_state has %d rows, want exactly 1", n)
	}
	if n := queryInt(t, s, `SELECT next_sequence_id + next_event_sequence FROM leasemesh.queue_state`); n != 2 {
		t.Errorf("queue_state counters start at sum %d, want 1 and 1", n)
	}
	// The hot paths' indexes are partial, so they hold only the rows a
	// path wants.
	for _, idx := range []string{"items_ready", "items_ready_partition", "items_leased_expiry", "items_scheduled", "items_dead"} {
		var def string
		if err := s.Pool().QueryRow(context.Background(), `SELECT indexdef FROM pg_indexes WHERE schemaname = 'leasemesh' AND indexname = $1`, idx).Scan(&def); err != nil {
			t.Errorf("index %s: %v", idx, err)
		} else if !strings.Contains(def, "WHERE") {
			t.Errorf("index %s is not partial: %s", idx, def)
		}
	}
	if s.Schema() != postgres.DefaultSchema {
		t.Errorf("Schema() = %q, want %q", s.Schema(), postgres.DefaultSchema)
	}
}

// TestConcurrentOpensMigrateOnce: processes starting at once on an empty
// database all open, and the migrations run once.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	const openers = 3
	logs := &logRecorder{}
	logger := slog.New(logs)
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		stores = make([]*postgres.Store, openers)
		errs   = make([]error, openers)
	)
	for i := range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = postgres.Open(context.Background(), dbURL, postgres.Config{Logger: logger})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	if got := logs.messages(); len(got) != 1 || got[0] != "postgres: migrated schema" {
		t.Errorf("logged %q; want one migration, by one of the openers", got)
	}
	s := stores[0]
	if n := queryInt(t, s, `SELECT count(*) FROM leasemesh.schema_migrations`); n != int64(postgres.LatestSchemaVersion()) {
		t.Errorf("schema_migrations has %d rows, want %d (one per migration)", n, postgres.LatestSchemaVersion())
	}
	if n := queryInt(t, s, `SELECT count(*) FROM leasemesh.queue_state`); n != 1 {
		t.Errorf("queue_state has %d rows, want 1", n)
	}
	// Every store works on the one schema.
	for i, st := range stores {
		if _, err := st.StateStore().TryAdd(context.Background(), fmt.Sprint("opener/", i), resourcelease.Record{}); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
	if n := queryInt(t, s, `SELECT count(*) FROM leasemesh.state_records`); n != openers {
		t.Errorf("state_records has %d rows, want %d", n, openers)
	}
}

func TestReopenMakesNoDDL(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	first := openStore(t, dbURL, postgres.Config{})
	ctx := context.Background()
	// A role that may use the schema's tables but create nothing: it can
	// open a migrated database only if Open makes no DDL there.
	for _, stmt := range []string{
		`CREATE ROLE app LOGIN`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA leasemesh TO app`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA leasemesh TO app`,
	} {
		if _, err := first.Pool().Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() { pgtest.Shared(t).Exec(ctx, `DROP ROLE IF EXISTS app`) }) //nolint:errcheck // after the database is dropped
	u, _ := url.Parse(dbURL)
	u.User = url.User("app")
	s := openStore(t, u.String(), postgres.Config{})
	if err := s.StateStore().Set(ctx, "as app", resourcelease.Record{Kind: "k"}); err != nil {
		t.Fatalf("Set as app: %v", err)
	}
	// The same role cannot migrate an empty schema, and says why.
	_, err := postgres.Open(ctx, u.String(), postgres.Config{Schema: "other"})
	if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Open of a new schema without CREATE privilege: %v, want unavailable naming the permission", err)
	}
}

func TestSchemasAreIndependent(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	a := openStore(t, dbURL, postgres.Config{Schema: "mesh_a"})
	b := openStore(t, dbURL, postgres.Config{Schema: "mesh_b"})
	ctx := context.Background()
	if err := a.StateStore().Set(ctx, "k", resourcelease.Record{Kind: "in a"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.StateStore().Get(ctx, "k"); err != nil || ok {
		t.Fatalf("schema b sees schema a's record: %v, %v", ok, err)
	}
	if got := strings.Join(tablesIn(t, a, "mesh_b"), ","); got != strings.Join(schemaTables, ",") {
		t.Errorf("tables in mesh_b: %s", got)
	}
	if got := tablesIn(t, a, "leasemesh"); len(got) != 0 {
		t.Errorf("the default schema was created too: %v", got)
	}
	if a.StateStore().Table() != `"mesh_a"."state_records"` {
		t.Errorf("Table() = %s", a.StateStore().Table())
	}
}

func TestSchemaTooNew(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	s := openStore(t, dbURL, postgres.Config{})
	next := postgres.LatestSchemaVersion() + 1
	if _, err := s.Pool().Exec(context.Background(), `INSERT INTO leasemesh.schema_migrations (version, name) VALUES ($1, 'from_the_future')`, next); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.Open(context.Background(), dbURL, postgres.Config{})
	if resourcelease.StatusOf(err) != resourcelease.StatusFailedPrecondition || resourcelease.CodeOf(err) != postgres.CodeSchemaTooNew {
		t.Fatalf("Open of a newer schema: %v, want failed-precondition %s", err, postgres.CodeSchemaTooNew)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(next)) {
		t.Errorf("error %q does not name the version %d", err, next)
	}
}

func TestOpenRefusesANonUTF8Database(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	ctx := context.Background()
	if err := srv.Exec(ctx, `CREATE DATABASE latin1 TEMPLATE template0 ENCODING 'LATIN1'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Exec(ctx, `DROP DATABASE latin1 WITH (FORCE)`) }) //nolint:errcheck // best effort
	_, err := postgres.Open(ctx, srv.URL("latin1"), postgres.Config{})
	if resourcelease.StatusOf(err) != resourcelease.StatusFailedPrecondition || !strings.Contains(err.Error(), "UTF8") {
		t.Fatalf("Open of a LATIN1 database: %v, want failed-precondition naming UTF8", err)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	t.Parallel()
	// A URL nothing listens on: a Config error must be reported before any
	// connection is tried.
	refused := refusedURL(t)
	for _, tc := range []struct {
		name string
		url  string
		cfg  postgres.Config
	}{
		{"empty URL", "", postgres.Config{}},
		{"malformed URL", "postgres://host:notaport/db", postgres.Config{}},
		{"unknown sslmode", "postgres://127.0.0.1/db?sslmode=sometimes", postgres.Config{}},
		{"upper-case schema", refused, postgres.Config{Schema: "Leasemesh"}},
		{"quoted schema", refused, postgres.Config{Schema: `x"; DROP TABLE y; --`}},
		{"pg_ schema", refused, postgres.Config{Schema: "pg_mine"}},
		{"information_schema", refused, postgres.Config{Schema: "information_schema"}},
		{"long schema", refused, postgres.Config{Schema: strings.Repeat("s", 64)}},
		{"leading digit", refused, postgres.Config{Schema: "1mesh"}},
		{"negative MaxConns", refused, postgres.Config{MaxConns: -1}},
		{"negative ConnectTimeout", refused, postgres.Config{ConnectTimeout: -time.Second}},
		{"sub-millisecond StatementTimeout", refused, postgres.Config{StatementTimeout: time.Microsecond}},
		{"sub-millisecond IdleInTransactionTimeout", refused, postgres.Config{IdleInTransactionTimeout: time.Microsecond}},
		{"NUL in ApplicationName", refused, postgres.Config{ApplicationName: "a\x00b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := postgres.Open(context.Background(), tc.url, tc.cfg)
			if s != nil {
				s.Close()
			}
			if !errors.Is(err, resourcelease.ErrInvalidArgument) {
				t.Fatalf("Open: %v, want invalid-argument", err)
			}
		})
	}
	// The longest legal schema name is fine.
	s := openStore(t, pgtest.NewDatabase(t), postgres.Config{Schema: "_" + strings.Repeat("s", 62)})
	if len(s.Schema()) != 63 {
		t.Errorf("schema %q", s.Schema())
	}
}

// refusedURL returns the URL of a port that refuses connections.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return fmt.Sprintf("postgres://postgres:s3cret@127.0.0.1:%d/db?sslmode=disable", port)
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		start := time.Now()
		_, err := postgres.Open(context.Background(), refusedURL(t), postgres.Config{})
		if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable {
			t.Fatalf("Open of a refused port: %v, want unavailable", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusal took %v, want prompt", d)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q: want one line naming the host", err)
		}
	})
	// A server that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	silentURL := fmt.Sprintf("postgres://postgres@%s/db?sslmode=disable", silent.Addr())
	t.Run("silent server, caller's deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := postgres.Open(ctx, silentURL, postgres.Config{})
		if resourcelease.StatusOf(err) != resourcelease.StatusDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Open: %v, want deadline-exceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Open returned after %v, want at its 200ms deadline", d)
		}
	})
	t.Run("silent server, connect timeout", func(t *testing.T) {
		start := time.Now()
		_, err := postgres.Open(context.Background(), silentURL, postgres.Config{ConnectTimeout: 200 * time.Millisecond})
		if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable {
			t.Fatalf("Open: %v, want unavailable (the store's own timeout, not the caller's deadline)", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Open returned after %v, want at the 200ms connect timeout", d)
		}
	})
}

func TestSessionSettings(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	show := func(s *postgres.Store, setting string) string {
		t.Helper()
		var v string
		if err := s.Pool().QueryRow(context.Background(), "SHOW "+setting).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name  string
		query string
		cfg   postgres.Config
		want  map[string]string
	}{
		{"defaults", "", postgres.Config{}, map[string]string{
			"statement_timeout": "30s", "idle_in_transaction_session_timeout": "1min", "application_name": "leasemesh",
		}},
		{"URL settings kept", "&statement_timeout=1234&application_name=fromurl", postgres.Config{}, map[string]string{
			"statement_timeout": "1234ms", "idle_in_transaction_session_timeout": "1min", "application_name": "fromurl",
		}},
		{"Config wins over the URL", "&statement_timeout=1234&application_name=fromurl", postgres.Config{
			StatementTimeout: 2 * time.Second, IdleInTransactionTimeout: 5 * time.Second, ApplicationName: "fromconfig",
		}, map[string]string{
			"statement_timeout": "2s", "idle_in_transaction_session_timeout": "5s", "application_name": "fromconfig",
		}},
		{"negative sends no default", "&statement_timeout=1234", postgres.Config{StatementTimeout: -1, IdleInTransactionTimeout: -1}, map[string]string{
			"statement_timeout": "1234ms", "idle_in_transaction_session_timeout": "0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, dbURL+tc.query, tc.cfg)
			for setting, want := range tc.want {
				if got := show(s, setting); got != want {
					t.Errorf("%s = %q, want %q", setting, got, want)
				}
			}
		})
	}
	s := openStore(t, dbURL, postgres.Config{MaxConns: 3})
	if got := s.Pool().Config().MaxConns; got != 3 {
		t.Errorf("MaxConns = %d, want 3", got)
	}
}

func TestStatementTimeoutIsDeadlineExceeded(t *testing.T) {
	t.Parallel()
	s := openStore(t, pgtest.NewDatabase(t), postgres.Config{StatementTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	// Hold a record's row lock in a transaction, so a Set of it waits until
	// the statement timeout cancels it.
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // test cleanup
	if err := s.StateStore().SetTx(ctx, tx, "locked", resourcelease.Record{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.StateStore().Set(ctx, "locked", resourcelease.Record{Kind: "waits"})
	if resourcelease.StatusOf(err) != resourcelease.StatusDeadlineExceeded {
		t.Fatalf("Set behind a lock with a 100ms statement timeout: %v, want deadline-exceeded", err)
	}
	if e := resourcelease.AsError(err); e.Metadata["sqlstate"] != "57014" {
		t.Errorf("metadata %v, want sqlstate 57014", e.Metadata)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestNow(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	s := openStore(t, dbURL, postgres.Config{})
	before := time.Now()
	got, err := s.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Location() != time.UTC || got.Before(before.Add(-5*time.Second)) || got.After(time.Now().Add(5*time.Second)) {
		t.Errorf("database Now = %v, want about %v in UTC", got, before)
	}
	clock := leasetest.NewManualClock(time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC))
	m := openStore(t, dbURL, postgres.Config{Clock: clock})
	for range 2 {
		got, err := m.Now(ctx)
		if err != nil || !got.Equal(clock.Now()) {
			t.Errorf("Now with a manual clock = %v, %v; want %v", got, err, clock.Now())
		}
		clock.Advance(time.Hour)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, op := range stateOps {
		if err := op.call(context.Background(), s, "closed"); !errors.Is(err, resourcelease.ErrClosed) {
			t.Errorf("%s after Close: %v, want %v", op.name, err, resourcelease.ErrClosed)
		}
	}
	if _, err := s.SchemaVersion(context.Background()); !errors.Is(err, resourcelease.ErrClosed) {
		t.Errorf("SchemaVersion after Close: %v", err)
	}
}

// logRecorder is a slog.Handler that keeps the messages it is given.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

func (h *logRecorder) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}
