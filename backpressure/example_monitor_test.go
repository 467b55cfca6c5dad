package backpressure_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// A Monitor watches the pending count with a high and a low watermark and
// tells its listeners about each transition.
func ExampleMonitor() {
	clk := leasetest.NewManualClock(time.Time{})
	signals := make(chan resourcelease.BackpressureSignal, 8)
	m, err := backpressure.NewMonitor(backpressure.Config{
		HighWatermark: 64,
		LowWatermark:  16,
		Clock:         clk,
		Listeners: []resourcelease.BackpressureListener{
			backpressure.ListenerFunc(func(s resourcelease.BackpressureSignal) { signals <- s }),
		},
	})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	for _, pending := range []int{10, 63, 64, 40, 17, 16} {
		m.Observe(pending, clk.Now()) // the queue calls this on every change
		fmt.Printf("pending %2d: active=%v\n", pending, m.Active())
	}
	for range 2 {
		s := <-signals
		fmt.Printf("signal: active=%v at %d pending\n", s.IsActive, s.PendingCount)
	}

	// Output:
	// pending 10: active=false
	// pending 63: active=false
	// pending 64: active=true
	// pending 40: active=true
	// pending 17: active=true
	// pending 16: active=false
	// signal: active=true at 64 pending
	// signal: active=false at 16 pending
}

// In ModeReject, Admit refuses enqueues while backpressure is active.
func ExampleMonitor_Admit() {
	m, err := backpressure.NewMonitor(backpressure.Config{HighWatermark: 2, Mode: backpressure.ModeReject})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	m.Observe(2, time.Time{})
	err = m.Admit(context.Background())
	fmt.Println(errors.Is(err, resourcelease.ErrBackpressure), resourcelease.StatusOf(err))

	m.Observe(1, time.Time{})
	fmt.Println(m.Admit(context.Background()))

	// Output:
	// true resource-exhausted
	// <nil>
}

// A DiagnosticsListener keeps the latest signal and a history for the
// diagnostics page.
func ExampleDiagnosticsListener() {
	d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{HistorySize: 2})
	if err != nil {
		panic(err)
	}
	for i, active := range []bool{true, false, true} {
		d.OnBackpressure(resourcelease.BackpressureSignal{IsActive: active, PendingCount: i})
	}
	latest, _ := d.Latest()
	fmt.Println("latest active:", latest.IsActive)
	for _, s := range d.History() {
		fmt.Println("history:", s.IsActive, s.PendingCount)
	}

	// Output:
	// latest active: true
	// history: false 1
	// history: true 2
}
