package main

import (
	"context"
	"testing"
)

// TestRun runs the embedding example end to end: what the README shows works.
func TestRun(t *testing.T) {
	if err := run(context.Background(), t.TempDir(), 5); err != nil {
		t.Fatal(err)
	}
}
