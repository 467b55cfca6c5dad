package replication_test

import (
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

func TestMemoryReplicatorConformance(t *testing.T) {
	replicatortest.Run(t, func(t *testing.T) resourcelease.Replicator {
		return newMemory(t, replication.MemoryConfig{})
	})
}

func TestSQLiteReplicatorConformance(t *testing.T) {
	replicatortest.Run(t, func(t *testing.T) resourcelease.Replicator {
		return newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{Path: "conformance.db"})
	})
}

// TestSQLiteReplicatorConformanceUncached runs the suite with a one-event
// cache, so sinks and ReadEvents read the database instead of memory.
func TestSQLiteReplicatorConformanceUncached(t *testing.T) {
	replicatortest.Run(t, func(t *testing.T) resourcelease.Replicator {
		return newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{Path: "uncached.db", CacheSize: 1})
	})
}
