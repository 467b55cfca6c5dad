package worker_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// request, long-poll, client connection and worker must be gone.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
