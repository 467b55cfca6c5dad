package leasemesh_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: Close must
// stop everything Open started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
