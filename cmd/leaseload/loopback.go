package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/leasemesh/leasemesh/transport"
)

// leaseload sends load, so it refuses to send it anywhere but this machine.
// Three guards keep it there: the -target host must be loopback
// (checkTarget); every connection's resolved address must be loopback
// (loopbackOnly, which catches a "localhost" that resolves elsewhere); and
// the HTTP client never uses a proxy and never follows a redirect.

// errNotLoopback is the error of a host or address outside the loopback
// network.
var errNotLoopback = errors.New("leaseload sends load only to loopback (127.0.0.0/8, localhost or ::1), never off this machine")

// errRedirect is the error of a response that redirects: following it could
// lead off the machine, and a load target has no reason to redirect.
var errRedirect = errors.New("leaseload does not follow redirects")

// checkTarget parses the -target URL and refuses any host but a loopback
// one: localhost, an IPv4 address in 127.0.0.0/8 or ::1 (an IPv4-mapped
// 127.x address too). Other names are refused without being resolved.
func checkTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid -target %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid -target %q: want an http:// or https:// URL", raw)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("invalid -target %q: no host", raw)
	}
	if !isLoopbackHost(host) {
		return nil, fmt.Errorf("-target host %q refused: %w", host, errNotLoopback)
	}
	return u, nil
}

// isLoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback IP address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return addr.Unmap().IsLoopback()
}

// loopbackOnly is the dialer's Control hook: it runs after name resolution,
// with the address about to be connected to, and refuses any that is not
// loopback.
func loopbackOnly(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s %s refused: %w", network, address, errNotLoopback)
	}
	if !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("dial %s %s refused: %w", network, address, errNotLoopback)
	}
	return nil
}

// newHTTPClient returns the one HTTP client every phase uses, so the echo
// ceiling and leasemesh are measured with the same settings: keep-alive with
// an idle connection per worker at least (transport's default of
// DefaultMaxIdleConnsPerHost), no proxy, no redirects, loopback dials only.
func newHTTPClient(concurrency int) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: loopbackOnly}
	perHost := max(concurrency, transport.DefaultMaxIdleConnsPerHost)
	t := &http.Transport{
		Proxy:                 nil, // a proxy could be anywhere
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          2 * perHost,
		MaxIdleConnsPerHost:   perHost,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errRedirect
		},
	}
}
