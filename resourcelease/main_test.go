package resourcelease_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// engineStats is a queue's Stats for tests, which read the counts of a live
// engine (its Stats fails only on a done context).
func engineStats(q interface {
	Stats(context.Context) (resourcelease.Stats, error)
}) resourcelease.Stats {
	s, _ := q.Stats(context.Background())
	return s
}
