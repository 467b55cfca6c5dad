package resourcelease

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"sync"

	"github.com/google/uuid"
)

// leaseIDSources are ChaCha8 generators (a CSPRNG), each seeded from
// crypto/rand, pooled so that lease ids are drawn without the queue's lock
// and without a system call per lease.
var leaseIDSources = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails: it crashes the program first
	return rand.NewChaCha8(seed)
}}

// newLeaseID returns a random (version 4) UUID.
func newLeaseID() uuid.UUID {
	src := leaseIDSources.Get().(*rand.ChaCha8)
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], src.Uint64())
	binary.LittleEndian.PutUint64(b[8:], src.Uint64())
	leaseIDSources.Put(src)
	b[6] = (b[6] & 0x0f) | 0x40 // version 4
	b[8] = (b[8] & 0x3f) | 0x80 // RFC 4122 variant
	return uuid.UUID(b)
}
