package deterministic_test

import (
	"context"
	"fmt"

	"github.com/leasemesh/leasemesh/deterministic"
)

// A payment is charged once per order, however often the step is retried
// or replayed: the second Capture returns the recorded receipt without
// running the function.
func ExampleEffectStore() {
	ctx := context.Background()
	effects, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		panic(err)
	}
	charge := func(ctx context.Context) ([]byte, error) {
		fmt.Println("charging the card")
		return []byte("receipt-0001"), nil
	}
	for attempt := 1; attempt <= 2; attempt++ {
		receipt, err := effects.Capture(ctx, "order-0001/charge", charge)
		if err != nil {
			panic(err)
		}
		fmt.Printf("attempt %d: %s\n", attempt, receipt)
	}
	// Output:
	// charging the card
	// attempt 1: receipt-0001
	// attempt 2: receipt-0001
}

// A failing function records nothing, so the next Capture tries again.
func ExampleEffectStore_Capture_retry() {
	ctx := context.Background()
	effects, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		panic(err)
	}
	calls := 0
	flaky := func(ctx context.Context) ([]byte, error) {
		calls++
		if calls == 1 {
			return nil, fmt.Errorf("gateway timeout")
		}
		return []byte("sent"), nil
	}
	_, err = effects.Capture(ctx, "email-42", flaky)
	fmt.Println("first:", err)
	result, err := effects.Capture(ctx, "email-42", flaky)
	fmt.Println("second:", string(result), err)
	result, err = effects.Capture(ctx, "email-42", flaky)
	fmt.Println("third:", string(result), err, "calls:", calls)
	// Output:
	// first: gateway timeout
	// second: sent <nil>
	// third: sent <nil> calls: 2
}
