package postgres_test

import (
	"testing"

	"github.com/leasemesh/leasemesh/deterministic/statestoretest"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestStateStoreConformance(t *testing.T) {
	statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
		return newStore(t).StateStore()
	})
}
