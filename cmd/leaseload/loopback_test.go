package main

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url      string
		loopback bool // false: refused as not loopback
	}{
		{"http://127.0.0.1:7420/yarpc/v1", true},
		{"http://127.0.0.1/yarpc/v1", true},
		{"https://127.0.0.1:8443/yarpc/v1", true},
		{"http://127.8.9.10:7420/", true},
		{"http://127.255.255.254:1/", true},
		{"http://localhost:7420/yarpc/v1", true},
		{"http://LocalHost:7420/yarpc/v1", true},
		{"http://[::1]:7420/yarpc/v1", true},
		{"http://[::ffff:127.0.0.1]:7420/", true},
		{"http://example.com/yarpc/v1", false},
		{"http://localhost.example.com/", false},
		{"http://127.0.0.1.nip.io/", false},
		{"http://10.0.0.1:7420/", false},
		{"http://192.168.1.10:7420/", false},
		{"http://128.0.0.1/", false},
		{"http://0.0.0.0:7420/", false},
		{"http://[::]:7420/", false},
		{"http://[::2]:7420/", false},
		{"http://[::ffff:10.0.0.1]:7420/", false},
		{"http://[fe80::1%25lo]:7420/", false},
		{"http://127.1/", false}, // a shorthand the resolver might map anywhere: refused
		{"http://2130706433/", false},
		{"http://user@evil.example/", false},
	}
	for _, tt := range tests {
		_, err := checkTarget(tt.url)
		if tt.loopback {
			assert.NoError(t, err, tt.url)
			continue
		}
		assert.ErrorIs(t, err, errNotLoopback, tt.url)
	}
}

func TestCheckTargetMalformed(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:7420", "ftp://127.0.0.1/", "http://", "http://%zz/", "unix:///tmp/sock"} {
		_, err := checkTarget(u)
		assert.Error(t, err, u)
		assert.False(t, errors.Is(err, errNotLoopback), "%q: want a malformed-URL error, got %v", u, err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		address string
		ok      bool
	}{
		{"127.0.0.1:7420", true},
		{"127.3.2.1:80", true},
		{"[::1]:7420", true},
		{"[::ffff:127.0.0.1]:80", true},
		{"10.0.0.1:80", false},
		{"93.184.216.34:443", false},
		{"0.0.0.0:80", false},
		{"[2001:db8::1]:80", false},
		{"localhost:80", false}, // the hook sees resolved addresses only
		{"garbage", false},
	}
	for _, tt := range tests {
		err := loopbackOnly("tcp", tt.address, nil)
		if tt.ok {
			assert.NoError(t, err, tt.address)
			continue
		}
		assert.ErrorIs(t, err, errNotLoopback, tt.address)
	}
}
