// Package transport carries leasemesh over HTTP: the yarpc-style HTTP/JSON
// RPC handler that serves a resourcelease.Dispatcher, the Go Client that
// speaks to it (and is itself a Dispatcher), the Worker that runs the
// lease → heartbeat → complete/fail loop over either, and the control-plane
// handler and client (NewControlHandler, ControlClient). It imports no other
// leasemesh package than resourcelease, and builds without cgo.
//
// # Serving: mount the handler in your mux
//
// NewHandler returns a plain http.Handler. It answers whatever path it is
// mounted at, so it lives beside your own routes:
//
//	d, _ := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
//	h, err := transport.NewHandler(d, transport.HandlerConfig{
//		Service:   "mesh",
//		Namespace: "resourcelease.mesh", // procedures "resourcelease.mesh::<verb>"
//		Authorize: transport.BearerTokens(map[transport.Role][]string{ // a token per role
//			transport.RoleProducer: {producerToken},
//			transport.RoleWorker:   {workerToken},
//			transport.RoleAdmin:    {adminToken}, // drain, restore, redrive, purge; every role
//		}),
//		Registerer: registry, // optional: rpc_requests_total, rpc_request_duration_seconds
//	})
//	mux.Handle("/yarpc/v1", h)
//	srv, err := transport.NewServer(mux, transport.ServerConfig{}) // safe against slow and hostile clients
//
// The protocol is yarpc's HTTP transport with the JSON encoding, so a
// yarpc-go client calls the handler, and the Client calls a yarpc-go server,
// without adapters. A request is a POST whose Rpc-Procedure header names
// "<namespace>::<verb>" (enqueue, lease, heartbeat, complete, fail, release,
// drain, restore, stats, deadletters, redrive, purge, and the batch
// procedures enqueueBatch, leaseBatch, heartbeatBatch and completeBatch,
// which the handler serves with per-item calls for a Dispatcher that is not a
// resourcelease.BatchDispatcher) and whose body is that verb's JSON request
// (see the types in resourcelease/dispatcher.go; an empty body is {}, unknown
// fields are ignored). Rpc-Service, when present, must name the handler's
// service; Rpc-Encoding, when present, must be json or application/json;
// Context-TTL-MS (yarpc's), Rpc-Ttl-Ms or Rpc-Deadline set the deadline of
// the Dispatcher's context, capped by MaxTTL (a lease long-poll is further
// capped by MaxWait, and ends as soon as the client goes away); Rpc-Caller
// and the peer id (Rpc-Header-Peer-Id, else x-peer-id) reach the Dispatcher
// through resourcelease.CallInfo. yarpc's other headers (routing, tracing,
// application headers) are accepted.
//
// A success is HTTP 200 with Rpc-Status: success and the JSON response (a
// lease with nothing available is the body null); Rpc-Service is echoed. An
// error carries the HTTP status of its resourcelease.Status (yarpc's table),
// Rpc-Status and Rpc-Error-Code (the status), Rpc-Error-Name (the stable
// code), Rpc-Error-Message, Rpc-Both-Response-Error when the request carried
// Rpc-Accepts-Both-Response-Error: true, and the body
// {"message","status","code","metadata"}. Only *resourcelease.Error values
// reach the wire as they are: any other error, and any panic in the
// Dispatcher, is logged and sent as internal with a generic message. A method
// other than POST is answered 405.
//
// Each procedure requires a Role (RoleOf: producer, worker, observer or
// admin), and HandlerConfig.Authorize, one Authorizer, decides whether a
// request holds it; BearerTokens gives each role its tokens. Without
// Authorize the admin procedures are refused, so a handler mounted with a
// zero config serves producers, workers and reads only.
//
// # Exposing it: NewServer and TLS
//
// NewServer returns an *http.Server that bounds headers, bodies and each
// response write in time (without cutting long-polls, which end at their own
// deadlines), headers in size and connections in number. TLSConfig builds
// the server's and the client's *tls.Config from PEM files, with client
// certificates required when a client CA is given (mutual TLS); the Client
// takes it in ClientConfig.TLS.
//
// Middleware (HandlerConfig.Middleware) wraps the protocol after the method
// and authorization checks; OnlyProcedures restricts one to some procedures
// (the backpressure rate limiter throttles enqueue only), and WriteError lets
// it refuse in the protocol's format.
//
// # Calling: the Client
//
// NewClient returns a Client for a handler's URL. It implements
// resourcelease.BatchDispatcher, so code written against a Dispatcher runs
// over the network unchanged (and its batch methods fall back to per-item
// calls on a server without the batch procedures):
//
//	c, err := transport.NewClient("http://127.0.0.1:7420/yarpc/v1", transport.ClientConfig{
//		Namespace: "resourcelease.mesh", Caller: "worker-1",
//	})
//	defer c.Close()
//	l, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 10 * time.Second})
//
// The context's deadline travels as Context-TTL-MS (a call without one gets
// ClientConfig.Timeout; a long-poll gets at least its wait plus
// LongPollMargin), with Rpc-Caller (defaulted), Rpc-Service, Rpc-Encoding:
// json and Rpc-Accepts-Both-Response-Error: true, which a yarpc-go server
// requires. Errors come back as *resourcelease.Error with their status, code,
// message and metadata, from a leasemesh server or a yarpc-go one, so
// errors.Is(err, resourcelease.ErrUnknownToken) holds across the wire; a
// server that cannot be reached is status unavailable with code
// CodeTransportUnavailable. Call sends a raw request with a full procedure
// name, as `leasectl request` does.
//
// Several dispatchers of one mesh (dispatchers on one PostgreSQL database)
// go in ClientConfig.URLs: the Client sends its calls to them in turn,
// leaves one that failed alone for a back-off, and sends a call that met a
// dead or unavailable dispatcher to the next, without applying it twice
// (enqueues keep their requestId; a settle whose retry finds its token
// unknown is resourcelease.ErrPossiblySettled). The Client's doc says which
// calls are retried when.
//
// # Working: the Worker
//
// NewWorker runs Handler on leases from any Dispatcher, a Client or one in
// the same process:
//
//	w, err := worker.New(c, worker.Config{
//		PeerID:      "worker-1",
//		Concurrency: 4,
//		Handler: func(ctx context.Context, l *resourcelease.Lease) error {
//			return process(ctx, l.Payload)
//		},
//	})
//	err = w.Run(ctx) // until ctx ends
//
// Each lease is heartbeated at its advertised interval while Handler runs; a
// heartbeat answered unknown_token cancels Handler's context (cause
// ErrLeaseLost). Handler's nil completes the lease; an error fails it with
// requeue, the error as reason and, for a *resourcelease.Error, its code
// (Permanent dead-letters instead). A dispatcher that is down is retried with
// exponential backoff and jitter. When ctx ends, Run stops leasing, cancels
// the handlers, releases their leases (the attempt not counted) and returns.
// A worker times each lease by its leaseTtlMs from when it sent the request,
// so it needs no clock agreement with the dispatcher. Stats reports what it
// did.
package transport
