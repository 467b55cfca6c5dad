package leasemesh_test

import "github.com/leasemesh/leasemesh/backpressure"

// backpressureConfig turns backpressure on at high pending, refusing enqueues.
func backpressureConfig(high int) backpressure.Config {
	return backpressure.Config{HighWatermark: high, Mode: backpressure.ModeReject}
}
