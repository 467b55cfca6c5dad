// Leasectl is the command-line client of a leasemesh dispatcher.
//
// `leasectl request` sends one raw call with the flags of OmniRelay's
// `omnirelay request`:
//
//	leasectl request --transport http --url http://127.0.0.1:7420/yarpc/v1 \
//	  --service resourcelease-mesh-demo --procedure resourcelease.mesh::enqueue \
//	  --encoding application/json --body '{"payload":{...}}'
//
// The friendly verbs call the RPC endpoint through transport.Client: enqueue,
// lease, heartbeat, complete, fail, stats, drain (to a file), restore (from
// one) and deadletters (list, redrive, purge). items, item, pause, resume,
// peers and tail call the control plane (control.NewHandler) through
// control.Client: items lists pending, leased or dead-lettered items (paged,
// filtered), item shows one with its body and replication events, pause and
// resume stop and restart leasing, and tail follows the replication log, one
// JSON event per line.
//
// Defaults come from the environment: LEASECTL_URL
// (http://127.0.0.1:7420/yarpc/v1), LEASECTL_SERVICE, LEASECTL_NAMESPACE
// (resourcelease), LEASECTL_CALLER (leasectl), LEASECTL_CONTROL_URL
// (http://127.0.0.1:5158) and LEASECTL_BEARER_TOKEN.
//
// Exit status: 0 on success; 1 when a call fails, with
// "error: <status> <code>: <message>" on stderr; 2 for a usage error.
// `leasectl help` lists the verbs and `leasectl help <verb>` documents one,
// with an example.
//
// The binary needs no cgo: it imports only resourcelease and transport.
package main
