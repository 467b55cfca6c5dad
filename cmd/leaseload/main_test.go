package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// servers, workers and keep-alive connections of every run must be gone
// when run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
