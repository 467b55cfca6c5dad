package deterministic

import (
	"context"
	"errors"
	"testing"
)

func TestKeyedMutexDropsIdleKeys(t *testing.T) {
	var m keyedMutex
	ctx := context.Background()
	unlockA, err := m.lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	unlockB, err := m.lock(ctx, "b") // another key does not wait for "a"
	if err != nil {
		t.Fatal(err)
	}
	if n := m.size(); n != 2 {
		t.Fatalf("size with two held keys = %d, want 2", n)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.lock(cancelled, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock of a held key with a cancelled context: err = %v, want cancelled", err)
	}
	unlockA()
	unlockB()
	if n := m.size(); n != 0 {
		t.Fatalf("size after every unlock = %d, want 0", n)
	}
	unlockA, err = m.lock(ctx, "a") // a released key can be taken again
	if err != nil {
		t.Fatal(err)
	}
	unlockA()
}

func TestEffectStoreForgetsFinishedIDs(t *testing.T) {
	es, err := NewEffectStore(EffectConfig{Store: NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	for i, fnErr := range []error{nil, errors.New("fails")} {
		id := string(rune('a' + i))
		es.Capture(context.Background(), id, func(context.Context) ([]byte, error) { return []byte(id), fnErr })
	}
	if n := es.ids.size(); n != 0 {
		t.Fatalf("%d effect ids still locked after their captures returned, want 0", n)
	}
}
