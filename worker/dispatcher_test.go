package worker_test

import (
	"github.com/leasemesh/leasemesh/resourcelease"
)

// newLocalDispatcher returns the real in-process Dispatcher over a new
// in-memory queue, and a function that closes it. Tests and examples use it to
// run the worker against the real engine.
func newLocalDispatcher(cfg resourcelease.QueueConfig) (*resourcelease.LocalDispatcher, func()) {
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Queue: cfg})
	if err != nil {
		panic(err) // test and example configurations are valid
	}
	return d, func() { _ = d.Close() }
}
