// Package config loads the mesh demo's configuration from its four layers,
// later layers winning:
//
//  1. built-in defaults;
//  2. appsettings.json in the working directory (section "meshDemo"; the file
//     is optional; a top-level "urls" is honoured as in ASP.NET);
//  3. environment variables MESHDEMO_meshDemo__<key> (and MESHDEMO_urls);
//  4. the command line, in the documented .NET form (--meshDemo:roles=worker,
//     --meshDemo:rpcUrl http://0.0.0.0:7420, --urls=http://0.0.0.0:5158) or as
//     Go-style flags (-roles worker, -rpc-url=..., -urls ..., -data-dir ...).
//
// Keys are case-insensitive, like .NET configuration keys. List keys (roles,
// workerPeerId, urls) take a comma-separated list, a JSON array, or .NET's
// indexed form (--meshDemo:roles:0=dispatcher, MESHDEMO_meshDemo__roles__1=worker).
// Durations are seconds and may be fractional.
//
// Every mistake is a *ConfigValidationError naming the key, the bad value and
// where it came from, so the demo can print it on one line and exit with code 2.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Section is the configuration section of the demo, in appsettings.json and
// in the key paths of the environment and the command line.
const Section = "meshDemo"

// EnvPrefix prefixes every environment variable the demo reads.
const EnvPrefix = "MESHDEMO_"

// FileName is the optional settings file read from the working directory.
const FileName = "appsettings.json"

// Defaults of the demo (see the README's configuration table).
const (
	DefaultServiceName = "resourcelease-mesh-demo"
	DefaultNamespace   = "resourcelease.mesh"
	DefaultRPCURL      = "http://127.0.0.1:7420/yarpc/v1"
	DefaultRPCPath     = "/yarpc/v1"
	DefaultDataDir     = "mesh-data"
	// defaultMaxDeadLetters is maxDeadLetters' default (the engine's).
	defaultMaxDeadLetters = 100_000
	DefaultURLs           = "http://localhost:5158"
	DefaultWorkerPeerID   = "mesh-worker-a,mesh-worker-b"
	// DefaultSideURL is where a process without the diagnostics role serves
	// /metrics when urls is not set: a free loopback port, printed at start.
	DefaultSideURL = "http://127.0.0.1:0"
)

// Role is one of the parts a process can run.
type Role string

// The roles. All four are on by default.
const (
	RoleDispatcher  Role = "dispatcher"
	RoleDiagnostics Role = "diagnostics"
	RoleSeeder      Role = "seeder"
	RoleWorker      Role = "worker"
)

// AllRoles lists the roles in the order the demo starts them.
var AllRoles = []Role{RoleDispatcher, RoleDiagnostics, RoleSeeder, RoleWorker}

// Roles is a set of roles.
type Roles map[Role]bool

// Has reports whether r is in the set.
func (rs Roles) Has(r Role) bool { return rs[r] }

// String lists the roles in start order, comma-separated.
func (rs Roles) String() string {
	var out []string
	for _, r := range AllRoles {
		if rs[r] {
			out = append(out, string(r))
		}
	}
	return strings.Join(out, ",")
}

// Storage selects where the dispatcher keeps its queue.
type Storage string

// The storage kinds.
const (
	StorageSQLite Storage = "sqlite"
	StorageMemory Storage = "memory"
	// StoragePostgres keeps the queue in PostgreSQL (postgresUrl), so that
	// several dispatcher processes serve one queue.
	StoragePostgres Storage = "postgres"
)

// BackpressureMode is what enqueue does while backpressure is active.
type BackpressureMode string

// The backpressure modes.
const (
	BackpressureWait   BackpressureMode = "wait"
	BackpressureReject BackpressureMode = "reject"
)

// Listen is one HTTP listener: the URL as configured and the address to bind.
type Listen struct {
	// URL is the configured URL, e.g. http://localhost:5158 (for rpcUrl, with
	// the default path filled in).
	URL string
	// Raw is the value as the user wrote it, for error messages.
	Raw string
	// Addr is the host:port to bind, e.g. 127.0.0.1:5158.
	Addr string
	// Loopback reports whether Addr is a loopback address.
	Loopback bool
	// TLS reports whether the URL is https: the listener serves TLS with
	// tlsCertFile and tlsKeyFile.
	TLS bool
}

// Scheme is "https" for a TLS listener, else "http".
func (l Listen) Scheme() string {
	if l.TLS {
		return "https"
	}
	return "http"
}

// Config is the demo's resolved configuration. Load fills every field; the
// doc of each field names its key and default.
type Config struct {
	// ServiceName (serviceName) is the RPC service. Default resourcelease-mesh-demo.
	ServiceName string
	// Namespace (namespace) prefixes the procedures. Default resourcelease.mesh.
	Namespace string
	// RPC (rpcUrl) is where the dispatcher serves RPC. Default
	// http://127.0.0.1:7420/yarpc/v1; the path defaults to /yarpc/v1.
	RPC Listen
	// RPCPath is the path of RPC.
	RPCPath string
	// RPCClientURL (rpcClientUrl) is the first of RPCClientURLs. Default:
	// rpcUrl with a wildcard host (0.0.0.0, ::, *, +) replaced by 127.0.0.1.
	RPCClientURL string
	// RPCClientURLs (rpcClientUrl: one URL, a comma list or a JSON array)
	// are the dispatchers of one mesh that seeders, workers and
	// /demo/enqueue spread their calls over, failing over from one that is
	// down. Default: [RPCClientURL].
	RPCClientURLs []string
	// DataDirectory (dataDirectory) holds replication.db and deterministic.db.
	// Default mesh-data.
	DataDirectory string
	// WorkerPeerIDs (workerPeerId) are the peer ids of the workers this
	// process runs, one worker each. Default mesh-worker-a,mesh-worker-b.
	WorkerPeerIDs []string
	// SeederInterval (seederIntervalSeconds) is the seeder's cadence. Default 1s.
	SeederInterval time.Duration
	// Roles (roles) are the roles this process runs. Default all four.
	Roles Roles
	// URLs (urls) are the HTTP listeners for diagnostics and /metrics. Default
	// http://localhost:5158 with the diagnostics role, else http://127.0.0.1:0.
	URLs []Listen
	// LeaseDuration (leaseDurationSeconds). Default 30s.
	LeaseDuration time.Duration
	// HeartbeatInterval (heartbeatIntervalSeconds). Default 5s.
	HeartbeatInterval time.Duration
	// MaxDeliveryAttempts (maxDeliveryAttempts). Default 5.
	MaxDeliveryAttempts int
	// RequeueDelay (requeueDelaySeconds). Default 0.
	RequeueDelay time.Duration
	// Capacity (capacity) is the most ready and leased items (delayed ones
	// are not counted). Default 512.
	Capacity int
	// MaxActivePerPartition (maxActivePerPartition) bounds the live leases
	// per partition key; 1 processes each partition strictly in order.
	// Default 0: no limit.
	MaxActivePerPartition int
	// Fairness (fairness): fifo (default) or partitions (round-robin).
	Fairness resourcelease.Fairness
	// DeadLetterRetention (deadLetterRetentionSeconds) is how long dead
	// letters are kept; 0 (the default) keeps them until redriven or purged.
	DeadLetterRetention time.Duration
	// MaxDeadLetters (maxDeadLetters) bounds the dead letters kept; -1 means
	// no bound. Default 100,000.
	MaxDeadLetters int
	// HighWatermark (highWatermark). Default 64.
	HighWatermark int
	// LowWatermark (lowWatermark). Default highWatermark/4 (16).
	LowWatermark int
	// BackpressureCooldown (backpressureCooldownSeconds). Default 5s.
	BackpressureCooldown time.Duration
	// BackpressureMode (backpressureMode): wait or reject. Default wait.
	BackpressureMode BackpressureMode
	// RateLimitPerSecond (rateLimitPerSecond) limits enqueues; 0 = unlimited (default).
	RateLimitPerSecond float64
	// BackpressureRateLimitPerSecond (backpressureRateLimitPerSecond) is the
	// enqueue limit while backpressure is active; 0 = unlimited. Default 50.
	BackpressureRateLimitPerSecond float64
	// Storage (storage): sqlite (default), memory, or postgres (with
	// postgresUrl; dataDirectory is then ignored).
	Storage Storage
	// PostgresURL (postgresUrl) is the database of storage=postgres,
	// postgres://user:password@host:port/database (the password is never
	// printed).
	PostgresURL string
	// OTLPEndpoint (otlpEndpoint) is the OpenTelemetry collector that
	// traces are exported to over OTLP/HTTP; empty (the default) traces
	// nothing.
	OTLPEndpoint string
	// ControlToken (adminToken, or its older name controlToken) is the
	// admin role's bearer token: drain, restore, redrive, purge and the
	// control plane's destructive endpoints need it, and it holds every
	// other role. Default: none on loopback (those calls are open to this
	// machine); generated when any listener binds a non-loopback address.
	ControlToken string
	// ProducerToken (producerToken) is the producer role's bearer token:
	// enqueue (and /demo/enqueue) need it, and the seeder sends it. Default
	// none: enqueue is open.
	ProducerToken string
	// WorkerToken (workerToken) is the worker role's bearer token: lease,
	// heartbeat, complete, fail and release need it, and the workers send
	// it. Default none: those are open.
	WorkerToken string
	// TLSCertFile and TLSKeyFile (tlsCertFile, tlsKeyFile) are the PEM
	// certificate and key of the https listeners, and the client
	// certificate the seeder, workers and /demo/enqueue present to a
	// dispatcher that asks for one. Required by an https rpcUrl or urls.
	TLSCertFile, TLSKeyFile string
	// TLSCAFile (tlsCaFile) is the PEM bundle of CAs the clients trust to
	// sign the dispatcher's certificate. Default: the system's roots.
	TLSCAFile string
	// TLSClientCAFile (tlsClientCaFile), when set, makes the https RPC
	// listener require a client certificate signed by one of these CAs
	// (mutual TLS). It needs an https rpcUrl on a dispatcher.
	TLSClientCAFile string
	// RefuseUnhealthyPeers (refuseUnhealthyPeers) makes the dispatcher refuse
	// leases, for a cool-down, to a peer whose breaker is open. Default true.
	RefuseUnhealthyPeers bool
	// BreakerThreshold (breakerThreshold) is how many consecutive lease
	// expiries of a peer open its breaker. Default 3; at least 2.
	BreakerThreshold int
	// BreakerCooldown (breakerCooldownSeconds) is how long an open breaker
	// refuses its peer. Default 30s.
	BreakerCooldown time.Duration
	// LogLevel (logLevel): debug, info (default), warn or error.
	LogLevel slog.Level
	// WorkerFailureRate (workerFailureRate) is the share of items a worker
	// fails with requeue. Default 0.2.
	WorkerFailureRate float64
	// WorkerProcessing (workerProcessingSeconds) is how long a worker works on
	// an item. Default 0.5s.
	WorkerProcessing time.Duration
	// WorkerConcurrency (workerConcurrency) is how many leases each worker
	// holds at once. Default 1.
	WorkerConcurrency int

	// Sources maps each key to the layer its value came from ("default",
	// "appsettings.json", "env MESHDEMO_...", "command line").
	Sources map[string]string
}

// Has reports whether the configuration enables role r.
func (c *Config) Has(r Role) bool { return c.Roles.Has(r) }

// Public reports whether any listener of this process binds a non-loopback
// address, which turns on the control token.
func (c *Config) Public() bool {
	if c.Has(RoleDispatcher) && !c.RPC.Loopback {
		return true
	}
	for _, l := range c.URLs {
		if !l.Loopback {
			return true
		}
	}
	return false
}

// ConfigValidationError reports a configuration mistake: the key (Field, as
// meshDemo:<key> or urls) and what is wrong with its value.
type ConfigValidationError struct {
	Field string
	Err   error
}

// Error returns "<field>: <problem>" on one line.
func (e *ConfigValidationError) Error() string {
	return fmt.Sprintf("config %s: %v", e.Field, e.Err)
}

// Unwrap returns Err.
func (e *ConfigValidationError) Unwrap() error { return e.Err }

// ErrHelp is returned by Load when the command line asks for help; the usage
// has been written to the help writer.
var ErrHelp = errors.New("help requested")

func fieldName(k *keyDef) string {
	if k.topLevel {
		return k.name
	}
	return Section + ":" + k.name
}
