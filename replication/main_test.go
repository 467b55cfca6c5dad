package replication_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The crash child is killed with SIGKILL mid-run; leak checks are moot.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
