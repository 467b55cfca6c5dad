package deterministic_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/leasemesh/leasemesh/deterministic"
)

// Two nodes race to decide the schema version of a change; the first decision
// stands, repeating it is harmless, and a different version is refused.
func ExampleVersionGate() {
	ctx := context.Background()
	gate, err := deterministic.NewVersionGate(deterministic.GateConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		panic(err)
	}
	fmt.Println("node a decides 2:", gate.Decide(ctx, "orders-schema", 2, []byte("add column priority")))
	fmt.Println("node a again:", gate.Decide(ctx, "orders-schema", 2, nil))
	err = gate.Decide(ctx, "orders-schema", 3, []byte("drop column priority"))
	fmt.Println("node b decides 3:", errors.Is(err, deterministic.ErrVersionConflict))
	fmt.Println(err)

	cur, ok, err := gate.Current(ctx, "orders-schema")
	if err != nil || !ok {
		panic(err)
	}
	fmt.Printf("current: version %d, %s\n", cur.Version, cur.Payload)
	// Output:
	// node a decides 2: <nil>
	// node a again: <nil>
	// node b decides 3: true
	// error.resourcelease.version_conflict: deterministic: change "orders-schema" is already decided at version 2; version 3 refused
	// current: version 2, add column priority
}
