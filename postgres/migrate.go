package postgres

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// migrationFiles are the schema's migrations, NNNN_name.sql, applied in
// version order. A released migration never changes: a change to the
// schema is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded migration.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// loadMigrations reads the migrations in dir of fsys and checks that their
// versions run 1, 2, 3, ... without a gap or a repeat.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s is not named NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{version: v, name: m[2], sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration versions must run 1, 2, 3, ...: found %04d_%s where %04d belongs", m.version, m.name, i+1)
		}
	}
	return ms, nil
}

var embeddedMigrations = sync.OnceValues(func() ([]migration, error) {
	return loadMigrations(migrationFiles, "migrations")
})

// LatestSchemaVersion returns the schema version this build migrates to
// (the number of its migrations), which [Store.SchemaVersion] reports after
// Open.
func LatestSchemaVersion() int {
	ms, _ := embeddedMigrations()
	return len(ms)
}

// migrationLockKey is the advisory lock that serializes migrations of one
// schema: a hash of its name, so stores in different schemas of one
// database do not wait for each other.
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("leasemesh/migrate/" + schema))
	return int64(h.Sum64())
}

// minServerVersion is the oldest PostgreSQL the store runs on (as
// server_version_num): the schema uses generated columns, sha256() and
// insert-triggered autovacuum.
const minServerVersion = 130000

// checkServer refuses a database the store cannot work with: one whose
// encoding is not UTF8 (the text columns would refuse or mangle keys and
// payload fields), or a server older than minServerVersion.
func checkServer(where, encoding string, version int) error {
	if encoding != "UTF8" {
		return resourcelease.Errorf(resourcelease.StatusFailedPrecondition, resourcelease.CodeStorageUnavailable,
			"postgres: open %s: the database's encoding is %s; leasemesh needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')", where, encoding)
	}
	if version < minServerVersion {
		return resourcelease.Errorf(resourcelease.StatusFailedPrecondition, resourcelease.CodeStorageUnavailable,
			"postgres: open %s: the server is PostgreSQL %d.%d; leasemesh needs %d or later", where, version/10000, version%10000, minServerVersion/10000)
	}
	return nil
}

// schemaMigrationsColumns are the columns of the table that records the
// migrations applied: one row per migration.
const schemaMigrationsColumns = ` (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrate brings the store's schema to this build's version in one
// transaction, holding the schema's advisory lock until it commits: a
// second process opening the same database waits on the lock and then
// finds every migration applied. Where the schema is current it makes no
// DDL at all (a role without CREATE privilege can open a migrated
// database).
func (s *Store) migrate(ctx context.Context, where string) (err error) {
	ms, err := embeddedMigrations()
	if err != nil {
		return &resourcelease.Error{Status: resourcelease.StatusInternal, Code: resourcelease.CodeInternal,
			Message: "postgres: embedded migrations: " + err.Error(), Err: err}
	}
	op := "open " + where + ": migrate schema " + s.cfg.Schema
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storageError(ctx, "open "+where, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the error to report is err
		}
	}()
	// Waiting for another opener's migration, or a migration on a large
	// table, may take longer than a statement may; ctx bounds it.
	if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
		return storageError(ctx, op, err)
	}
	var (
		encoding string
		version  int
	)
	if err := tx.QueryRow(ctx, `SELECT current_setting('server_encoding'), current_setting('server_version_num')::int
		FROM pg_advisory_xact_lock($1)`, migrationLockKey(s.cfg.Schema)).Scan(&encoding, &version); err != nil {
		return storageError(ctx, op, err)
	}
	if err := checkServer(where, encoding, version); err != nil {
		return err
	}
	var hasSchema, hasTable bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), to_regclass($2) IS NOT NULL`,
		s.cfg.Schema, s.table("schema_migrations")).Scan(&hasSchema, &hasTable); err != nil {
		return storageError(ctx, op, err)
	}
	if !hasSchema {
		if _, err := tx.Exec(ctx, `CREATE SCHEMA `+s.schema); err != nil {
			return storageError(ctx, op, err)
		}
	}
	if !hasTable {
		if _, err := tx.Exec(ctx, `CREATE TABLE `+s.table("schema_migrations")+schemaMigrationsColumns); err != nil {
			return storageError(ctx, op, err)
		}
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s.table("schema_migrations")).Scan(&current); err != nil {
		return storageError(ctx, op, err)
	}
	if current > len(ms) {
		return schemaTooNew(s.cfg.Schema, current, len(ms))
	}
	if current < len(ms) {
		// The migrations name their tables unqualified; LOCAL ends with the
		// transaction, so no pooled connection keeps this search_path.
		if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+s.schema); err != nil {
			return storageError(ctx, op, err)
		}
	}
	for _, m := range ms[current:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return storageError(ctx, fmt.Sprintf("%s: migration %04d_%s", op, m.version, m.name), err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+s.table("schema_migrations")+` (version, name) VALUES ($1, $2)`,
			m.version, m.name); err != nil {
			return storageError(ctx, op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return storageError(ctx, op, err)
	}
	if current < len(ms) {
		s.cfg.Logger.Info("postgres: migrated schema", "schema", s.cfg.Schema, "database", where,
			"from", current, "to", len(ms))
	}
	return nil
}
