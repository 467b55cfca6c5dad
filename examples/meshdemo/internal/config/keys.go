package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// keyDef describes one configuration key: its canonical name, its Go-style
// flags, its default (raw, as a user would type it; "" for derived defaults)
// and how its raw value is applied to a Config.
type keyDef struct {
	name     string
	flags    []string
	def      string
	help     string
	list     bool // accepts the indexed .NET array form
	topLevel bool // lives outside the meshDemo section (urls)
	apply    func(c *Config, raw string) error
}

// keys is the table of every key, in the order they are applied and listed.
var keys = []*keyDef{
	{name: "serviceName", flags: []string{"service-name", "service"}, def: DefaultServiceName,
		help: "RPC service name", apply: func(c *Config, v string) error { return nonBlank(&c.ServiceName, v) }},
	{name: "namespace", flags: []string{"namespace"}, def: DefaultNamespace,
		help: "procedure namespace (<namespace>::enqueue ...)", apply: func(c *Config, v string) error { return nonBlank(&c.Namespace, v) }},
	{name: "rpcUrl", flags: []string{"rpc-url"}, def: DefaultRPCURL,
		help: "dispatcher RPC bind URL; path defaults to /yarpc/v1", apply: applyRPCURL},
	{name: "rpcClientUrl", flags: []string{"rpc-client-url"}, list: true,
		help: "dispatcher URL(s) seeders and workers dial: one, a comma list or a JSON array of the dispatchers of one mesh (default: rpcUrl with a wildcard host replaced by 127.0.0.1)", apply: applyRPCClientURL},
	{name: "dataDirectory", flags: []string{"data-directory", "data-dir"}, def: DefaultDataDir,
		help: "directory of replication.db and deterministic.db", apply: func(c *Config, v string) error { return nonBlank(&c.DataDirectory, v) }},
	{name: "workerPeerId", flags: []string{"worker-peer-id"}, def: DefaultWorkerPeerID, list: true,
		help: "peer id(s) of the worker(s) this process runs (comma list: one worker each; {hostname} is replaced by the host name)", apply: applyPeerIDs},
	{name: "seederIntervalSeconds", flags: []string{"seeder-interval-seconds", "seeder-interval"}, def: "1",
		help: "seconds between two seeded items", apply: seconds(func(c *Config) *time.Duration { return &c.SeederInterval }, false)},
	{name: "roles", flags: []string{"roles"}, def: "dispatcher,diagnostics,seeder,worker", list: true,
		help: "roles to run: dispatcher, diagnostics, seeder, worker", apply: applyRoles},
	{name: "urls", flags: []string{"urls"}, topLevel: true, list: true,
		help: "HTTP listeners (; or , separated) for diagnostics and /metrics (default http://localhost:5158 with diagnostics, else http://127.0.0.1:0)", apply: applyURLs},
	{name: "leaseDurationSeconds", flags: []string{"lease-duration-seconds", "lease-duration"}, def: "30",
		help: "lease duration without heartbeat", apply: seconds(func(c *Config) *time.Duration { return &c.LeaseDuration }, false)},
	{name: "heartbeatIntervalSeconds", flags: []string{"heartbeat-interval-seconds", "heartbeat-interval"}, def: "5",
		help: "heartbeat interval advertised to workers", apply: seconds(func(c *Config) *time.Duration { return &c.HeartbeatInterval }, false)},
	{name: "maxDeliveryAttempts", flags: []string{"max-delivery-attempts"}, def: "5",
		help: "attempts before an item is dead-lettered", apply: integer(func(c *Config) *int { return &c.MaxDeliveryAttempts }, 1)},
	{name: "requeueDelaySeconds", flags: []string{"requeue-delay-seconds", "requeue-delay"}, def: "0",
		help: "delay before a failed item can be leased again", apply: seconds(func(c *Config) *time.Duration { return &c.RequeueDelay }, true)},
	{name: "capacity", flags: []string{"capacity"}, def: "512",
		help: "most ready and leased items (delayed ones are not counted)", apply: integer(func(c *Config) *int { return &c.Capacity }, 1)},
	{name: "maxActivePerPartition", flags: []string{"max-active-per-partition"}, def: "0",
		help: "live leases per partition key (0 = no limit; 1 = each partition strictly in order, one at a time)", apply: integer(func(c *Config) *int { return &c.MaxActivePerPartition }, 0)},
	{name: "fairness", flags: []string{"fairness"}, def: "fifo",
		help: "which ready item is leased next: fifo (the oldest) or partitions (round-robin over partition keys)", apply: applyFairness},
	{name: "deadLetterRetentionSeconds", flags: []string{"dead-letter-retention-seconds", "dead-letter-retention"}, def: "0",
		help: "how long a dead letter is kept before it is purged (0 = until redriven or purged)", apply: seconds(func(c *Config) *time.Duration { return &c.DeadLetterRetention }, true)},
	{name: "maxDeadLetters", flags: []string{"max-dead-letters"}, def: strconv.Itoa(defaultMaxDeadLetters),
		help: "most dead letters kept; past it the oldest is purged (-1 = no bound)", apply: applyMaxDeadLetters},
	{name: "highWatermark", flags: []string{"high-watermark"}, def: "64",
		help: "pending count that turns backpressure on", apply: integer(func(c *Config) *int { return &c.HighWatermark }, 1)},
	{name: "lowWatermark", flags: []string{"low-watermark"},
		help: "pending count that turns backpressure off (default highWatermark/4)", apply: integer(func(c *Config) *int { return &c.LowWatermark }, 0)},
	{name: "backpressureCooldownSeconds", flags: []string{"backpressure-cooldown-seconds", "backpressure-cooldown"}, def: "5",
		help: "least time between two backpressure transitions", apply: seconds(func(c *Config) *time.Duration { return &c.BackpressureCooldown }, true)},
	{name: "backpressureMode", flags: []string{"backpressure-mode"}, def: "wait",
		help: "enqueue under backpressure: wait or reject", apply: applyBackpressureMode},
	{name: "rateLimitPerSecond", flags: []string{"rate-limit-per-second", "rate-limit"}, def: "0",
		help: "enqueue rate limit per second (0 = unlimited)", apply: rate(func(c *Config) *float64 { return &c.RateLimitPerSecond })},
	{name: "backpressureRateLimitPerSecond", flags: []string{"backpressure-rate-limit-per-second", "backpressure-rate-limit"}, def: "50",
		help: "enqueue rate limit while backpressure is active (0 = unlimited)", apply: rate(func(c *Config) *float64 { return &c.BackpressureRateLimitPerSecond })},
	{name: "storage", flags: []string{"storage"}, def: "sqlite",
		help: "dispatcher storage: sqlite, memory or postgres (with postgresUrl)", apply: applyStorage},
	{name: "postgresUrl", flags: []string{"postgres-url"},
		help: "database of storage=postgres: postgres://user:password@host:port/database (several dispatchers on one database serve one queue)", apply: applyPostgresURL},
	{name: "producerToken", flags: []string{"producer-token"},
		help: "bearer token of the producer role (enqueue); the seeder sends it (unset: enqueue is open)", apply: token(func(c *Config) *string { return &c.ProducerToken })},
	{name: "workerToken", flags: []string{"worker-token"},
		help: "bearer token of the worker role (lease, heartbeat, complete, fail, release); the workers send it (unset: open)", apply: token(func(c *Config) *string { return &c.WorkerToken })},
	{name: "adminToken", flags: []string{"admin-token"},
		help: "bearer token of the admin role (drain, restore, redrive, purge, destructive control-plane calls; holds every role); generated on a non-loopback bind when unset", apply: token(func(c *Config) *string { return &c.ControlToken })},
	{name: "controlToken", flags: []string{"control-token"},
		help: "older name of adminToken", apply: token(func(c *Config) *string { return &c.ControlToken })},
	{name: "tlsCertFile", flags: []string{"tls-cert-file"},
		help: "PEM certificate of the https listeners, and the client certificate for mutual TLS", apply: filePath(func(c *Config) *string { return &c.TLSCertFile })},
	{name: "tlsKeyFile", flags: []string{"tls-key-file"},
		help: "PEM private key of tlsCertFile", apply: filePath(func(c *Config) *string { return &c.TLSKeyFile })},
	{name: "tlsCaFile", flags: []string{"tls-ca-file"},
		help: "PEM CAs the clients trust for an https rpcClientUrl (default: the system's roots)", apply: filePath(func(c *Config) *string { return &c.TLSCAFile })},
	{name: "tlsClientCaFile", flags: []string{"tls-client-ca-file"},
		help: "PEM CAs of the client certificates the https RPC listener requires (mutual TLS)", apply: filePath(func(c *Config) *string { return &c.TLSClientCAFile })},
	{name: "refuseUnhealthyPeers", flags: []string{"refuse-unhealthy-peers"}, def: "true",
		help: "refuse leases, for a cool-down, to a peer whose leases keep expiring (true or false)", apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want true or false")
			}
			c.RefuseUnhealthyPeers = b
			return nil
		}},
	{name: "breakerThreshold", flags: []string{"breaker-threshold"}, def: "3",
		help: "consecutive lease expiries of a peer, with no heartbeat or settle in between, that open its breaker (at least 2)", apply: integer(func(c *Config) *int { return &c.BreakerThreshold }, 2)},
	{name: "breakerCooldownSeconds", flags: []string{"breaker-cooldown-seconds", "breaker-cooldown"}, def: "30",
		help: "how long an open breaker refuses its peer before it lets one lease through", apply: seconds(func(c *Config) *time.Duration { return &c.BreakerCooldown }, false)},
	{name: "logLevel", flags: []string{"log-level"}, def: "info",
		help: "log level: debug, info, warn or error", apply: func(c *Config, v string) error {
			if err := c.LogLevel.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
				return errors.New("want debug, info, warn or error")
			}
			return nil
		}},
	{name: "workerFailureRate", flags: []string{"worker-failure-rate"}, def: "0.2",
		help: "share of items a worker fails (with requeue), 0..1", apply: applyFailureRate},
	{name: "workerProcessingSeconds", flags: []string{"worker-processing-seconds"}, def: "0.5",
		help: "simulated work time per item", apply: seconds(func(c *Config) *time.Duration { return &c.WorkerProcessing }, true)},
	{name: "workerConcurrency", flags: []string{"worker-concurrency"}, def: "1",
		help: "leases each worker holds at once", apply: integer(func(c *Config) *int { return &c.WorkerConcurrency }, 1)},
	{name: "otlpEndpoint", flags: []string{"otlp-endpoint"},
		help: "OpenTelemetry collector to export traces to over OTLP/HTTP, e.g. http://localhost:4318 (empty: no tracing)", apply: applyOTLPEndpoint},
}

// applyOTLPEndpoint takes an http(s) URL; a path, if any, is where the
// collector takes traces (default /v1/traces).
func applyOTLPEndpoint(c *Config, v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		c.OTLPEndpoint = ""
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("want an http(s) URL of an OTLP/HTTP collector such as http://localhost:4318, or empty")
	}
	c.OTLPEndpoint = v
	return nil
}

// lookupKey finds a key by its name (case-insensitive), as written after
// "meshDemo:" (or at top level for urls).
func lookupKey(name string, topLevel bool) *keyDef {
	for _, k := range keys {
		if strings.EqualFold(k.name, name) && k.topLevel == topLevel {
			return k
		}
	}
	return nil
}

// lookupFlag finds a key by a Go-style flag name, its kebab-case names and
// aliases or its canonical name (case-insensitive).
func lookupFlag(name string) *keyDef {
	for _, k := range keys {
		if strings.EqualFold(k.name, name) || slices.ContainsFunc(k.flags, func(f string) bool { return strings.EqualFold(f, name) }) {
			return k
		}
	}
	return nil
}

func nonBlank(dst *string, v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		return errors.New("must not be empty")
	}
	*dst = v
	return nil
}

// token applies a bearer token: it travels in a header, so it must be one
// line of visible characters.
func token(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		v = strings.TrimSpace(v)
		if strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return errors.New("must not contain white space or control characters")
		}
		*field(c) = v
		return nil
	}
}

// filePath applies a file path; the file itself is checked once every key
// is in.
func filePath(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = strings.TrimSpace(v)
		return nil
	}
}

func parseSeconds(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("want a number of seconds")
	}
	return f, nil
}

// minDuration is the smallest non-zero duration a seconds key accepts.
const minDuration = time.Millisecond

func seconds(field func(*Config) *time.Duration, zeroOK bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := parseSeconds(v)
		if err != nil {
			return err
		}
		switch {
		case f < 0 || (f == 0 && !zeroOK):
			if zeroOK {
				return errors.New("must be zero or more seconds")
			}
			return errors.New("must be more than zero seconds")
		case f > 365*24*3600:
			return errors.New("must be at most a year")
		}
		// Check the Duration actually used: a tiny value would truncate to
		// zero (a zero ticker interval panics; a zero lease means the
		// library default) or to a few nanoseconds.
		d := time.Duration(f * float64(time.Second))
		if f > 0 && d < minDuration {
			if zeroOK {
				return fmt.Errorf("must be zero or at least %g seconds (%s)", minDuration.Seconds(), minDuration)
			}
			return fmt.Errorf("must be at least %g seconds (%s)", minDuration.Seconds(), minDuration)
		}
		*field(c) = d
		return nil
	}
}

func integer(field func(*Config) *int, minimum int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("want an integer")
		}
		if n < minimum {
			return fmt.Errorf("must be at least %d", minimum)
		}
		*field(c) = n
		return nil
	}
}

func rate(field func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("want a number per second")
		}
		if f < 0 {
			return errors.New("must be zero (unlimited) or more")
		}
		*field(c) = f
		return nil
	}
}

func applyFailureRate(c *Config, v string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return errors.New("want a number between 0 and 1")
	}
	c.WorkerFailureRate = f
	return nil
}

// parseList splits a list value: a JSON array of strings, or a comma (and,
// when semi is set, semicolon) separated list. Blank entries are dropped.
func parseList(v string, semi bool) ([]string, error) {
	v = strings.TrimSpace(v)
	var parts []string
	if strings.HasPrefix(v, "[") {
		if err := json.Unmarshal([]byte(v), &parts); err != nil {
			return nil, errors.New("want a JSON array of strings or a comma-separated list")
		}
	} else {
		parts = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || (semi && r == ';') })
	}
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("must not be empty")
	}
	return out, nil
}

func applyRoles(c *Config, v string) error {
	parts, err := parseList(v, false)
	if err != nil {
		return err
	}
	rs := Roles{}
	for _, p := range parts {
		r := Role(strings.ToLower(p))
		if !slices.Contains(AllRoles, r) {
			return fmt.Errorf("unknown role %q (want dispatcher, diagnostics, seeder or worker)", p)
		}
		rs[r] = true
	}
	c.Roles = rs
	return nil
}

func applyPeerIDs(c *Config, v string) error {
	parts, err := parseList(v, false)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, p := range parts {
		if strings.Contains(p, "{hostname}") {
			host, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("cannot expand {hostname}: %w", err)
			}
			p = strings.ReplaceAll(p, "{hostname}", host)
			parts[i] = p
		}
		if seen[p] {
			return fmt.Errorf("peer id %q is listed twice", p)
		}
		seen[p] = true
	}
	c.WorkerPeerIDs = parts
	return nil
}

func applyBackpressureMode(c *Config, v string) error {
	switch m := BackpressureMode(strings.ToLower(strings.TrimSpace(v))); m {
	case BackpressureWait, BackpressureReject:
		c.BackpressureMode = m
		return nil
	}
	return errors.New("want wait or reject")
}

func applyFairness(c *Config, v string) error {
	switch f := resourcelease.Fairness(strings.ToLower(strings.TrimSpace(v))); f {
	case resourcelease.FairnessFIFO, resourcelease.FairnessPartitions:
		c.Fairness = f
		return nil
	}
	return errors.New("want fifo or partitions")
}

func applyMaxDeadLetters(c *Config, v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n == 0 || n < -1 {
		return errors.New("want a positive integer, or -1 for no bound")
	}
	c.MaxDeadLetters = n
	return nil
}

func applyStorage(c *Config, v string) error {
	switch s := Storage(strings.ToLower(strings.TrimSpace(v))); s {
	case StorageSQLite, StorageMemory, StoragePostgres:
		c.Storage = s
		return nil
	}
	return errors.New("want sqlite, memory or postgres")
}

// applyPostgresURL takes a postgres:// (or postgresql://) URL with a host.
// Errors never repeat the URL's password.
func applyPostgresURL(c *Config, v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		c.PostgresURL = ""
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL (want postgres://user:password@host:port/database)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q: want postgres://user:password@host:port/database", u.Scheme)
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("no host: want postgres://user:password@host:port/database")
	}
	c.PostgresURL = v
	return nil
}

// RedactedPostgresURL is PostgresURL with its password replaced, for
// errors, logs and the banner.
func (c *Config) RedactedPostgresURL() string {
	u, err := url.Parse(c.PostgresURL)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}

// DataDirectoryIgnored reports whether dataDirectory was set explicitly
// (by the environment or the command line, or by appsettings.json to other
// than its default) although storage=postgres does not use it.
func (c *Config) DataDirectoryIgnored() bool {
	if c.Storage != StoragePostgres {
		return false
	}
	switch c.Sources["dataDirectory"] {
	case "", SourceDefault:
		return false
	case SourceFile:
		return c.DataDirectory != DefaultDataDir
	}
	return true
}

// wildcardHost reports whether h means "every interface".
func wildcardHost(h string) bool {
	switch h {
	case "", "0.0.0.0", "::", "*", "+":
		return true
	}
	return false
}

// parseBindURL checks an http URL to listen on and returns the address to
// bind and whether it is loopback-only. localhost binds 127.0.0.1; the
// wildcard hosts (0.0.0.0, ::, *, +) bind every interface.
func parseBindURL(v string) (u *url.URL, l Listen, err error) {
	v = strings.TrimSpace(v)
	// ASP.NET's http://*:5158 and http://+:5158 are not valid URLs for Go.
	parsed := strings.Replace(strings.Replace(v, "://*", "://0.0.0.0", 1), "://+", "://0.0.0.0", 1)
	u, err = url.Parse(parsed)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return nil, l, errors.New("want an absolute http URL such as http://127.0.0.1:7420")
	case !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https"):
		return nil, l, fmt.Errorf("scheme %q is not supported (want http or https)", u.Scheme)
	case u.User != nil:
		return nil, l, errors.New("must not carry user info")
	}
	l.TLS = strings.EqualFold(u.Scheme, "https")
	host, port := u.Hostname(), u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return nil, l, errors.New("has an empty port")
		}
		port = "80"
		if l.TLS {
			port = "443"
		}
	}
	if p, perr := strconv.Atoi(port); perr != nil || p < 0 || p > 65535 {
		return nil, l, fmt.Errorf("port %q is not a port number", port)
	}
	bindHost := host
	switch {
	case strings.EqualFold(host, "localhost"):
		bindHost = "127.0.0.1"
		l.Loopback = true
	case wildcardHost(host):
		bindHost = ""
	default:
		if ip := net.ParseIP(host); ip != nil {
			l.Loopback = ip.IsLoopback()
		} else if strings.ContainsAny(host, " /\\") {
			return nil, l, fmt.Errorf("host %q is not a host name", host)
		}
	}
	l.URL, l.Raw = v, v
	l.Addr = net.JoinHostPort(bindHost, port)
	return u, l, nil
}

func applyRPCURL(c *Config, v string) error {
	u, l, err := parseBindURL(v)
	if err != nil {
		return err
	}
	c.RPCPath = u.EscapedPath()
	if c.RPCPath == "" || c.RPCPath == "/" {
		c.RPCPath, u.Path = DefaultRPCPath, DefaultRPCPath
	}
	if err := checkRPCPath(c.RPCPath, u.Path); err != nil {
		return err
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = c.RPCPath, "", "", ""
	l.URL = u.String()
	c.RPC = l
	return nil
}

// Routes the dispatcher serves next to RPC on the rpcUrl listener; the RPC
// path must stay clear of them (http.ServeMux would panic on a conflict, or
// silently route the RPC calls elsewhere).
const (
	controlPrefix = control.DefaultPrefix
	metricsPath   = "/metrics"
)

// checkRPCPath rejects an RPC path (escaped as served, and decoded as the
// mux reads it) that http.ServeMux cannot register or that collides with the
// control plane or /metrics.
func checkRPCPath(escaped, decoded string) error {
	for _, p := range []string{escaped, decoded} {
		if p != cleanPath(p) {
			return fmt.Errorf("path %q must be clean (no empty, . or .. segments)", p)
		}
	}
	for _, r := range []string{controlPrefix, metricsPath} {
		if decoded == r || strings.HasPrefix(decoded, r+"/") {
			return fmt.Errorf("path %q is reserved on the RPC listener (%s and %s/... are served there)", decoded, r, r)
		}
	}
	return nil
}

// cleanPath is path.Clean keeping a trailing slash, as http.ServeMux checks.
func cleanPath(p string) string {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// clientURLFrom derives what a client dials from a bind URL.
func clientURLFrom(u *url.URL) string {
	host, port := u.Hostname(), u.Port()
	if wildcardHost(host) {
		host = "127.0.0.1"
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	out := *u
	out.Host = host
	return out.String()
}

func applyRPCClientURL(c *Config, v string) error {
	parts, err := parseList(v, false)
	if err != nil {
		return err
	}
	c.RPCClientURLs = nil
	seen := map[string]bool{}
	for _, p := range parts {
		u, err := parseClientURL(p)
		if err != nil && len(parts) > 1 {
			return fmt.Errorf("%q: %w", p, err)
		} else if err != nil {
			return err
		}
		if seen[u] {
			return fmt.Errorf("%q is given twice", p)
		}
		if len(c.RPCClientURLs) > 0 && strings.HasPrefix(u, "https://") != strings.HasPrefix(c.RPCClientURLs[0], "https://") {
			return errors.New("mixes http:// and https:// URLs (the clients share one TLS setting)")
		}
		seen[u] = true
		c.RPCClientURLs = append(c.RPCClientURLs, u)
	}
	c.RPCClientURL = c.RPCClientURLs[0]
	return nil
}

// parseClientURL checks one dispatcher URL of rpcClientUrl and returns it
// as the clients dial it (a wildcard host made 127.0.0.1, the default path
// added).
func parseClientURL(v string) (string, error) {
	v = strings.TrimSpace(v)
	parsed := strings.Replace(strings.Replace(v, "://*", "://0.0.0.0", 1), "://+", "://0.0.0.0", 1)
	u, err := url.Parse(parsed)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", errors.New("want an absolute http(s) URL such as http://127.0.0.1:7420/yarpc/v1")
	}
	if p := u.Port(); p != "" {
		if n, perr := strconv.Atoi(p); perr != nil || n <= 0 || n > 65535 {
			return "", fmt.Errorf("port %q is not a port number", p)
		}
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultRPCPath
	}
	return clientURLFrom(u), nil
}

func applyURLs(c *Config, v string) error {
	parts, err := parseList(v, true)
	if err != nil {
		return err
	}
	c.URLs = nil
	for _, p := range parts {
		u, l, err := parseBindURL(p)
		if err != nil && len(parts) > 1 {
			return fmt.Errorf("%q: %w", p, err)
		} else if err != nil {
			return err
		}
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("%q: must not have a path", p)
		}
		c.URLs = append(c.URLs, l)
	}
	return nil
}
