package backpressure

import (
	"fmt"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Mode says what Admit does while backpressure is active.
type Mode int

const (
	// ModeWait makes Admit wait for backpressure to clear, bounded by its
	// context. It is the default.
	ModeWait Mode = iota
	// ModeReject makes Admit return an error matching
	// resourcelease.ErrBackpressure at once.
	ModeReject
)

// String returns "wait" or "reject".
func (m Mode) String() string {
	switch m {
	case ModeWait:
		return "wait"
	case ModeReject:
		return "reject"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "wait" or "reject" (case-insensitive, surrounding space
// ignored); an empty string is ModeWait.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "wait":
		return ModeWait, nil
	case "reject":
		return ModeReject, nil
	}
	return ModeWait, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: unknown mode %q (want wait or reject)", s)
}

// MarshalText encodes m as "wait" or "reject".
func (m Mode) MarshalText() ([]byte, error) {
	if !m.valid() {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: invalid mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText decodes "wait" or "reject", as ParseMode.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

func (m Mode) valid() bool { return m == ModeWait || m == ModeReject }
