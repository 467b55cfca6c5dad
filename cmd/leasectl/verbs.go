package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// rpcAction runs fn with a Client for o and a context bounded by --ttl.
func rpcAction(o *rpcOptions, fn func(c *transport.Client, ctx context.Context) error) error {
	c, err := o.client(transport.ClientConfig{})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.callContext()
	defer cancel()
	return fn(c, ctx)
}

// callAndPrint makes one RPC with a Client for o and prints its response:
// all that most verbs do once their flags are checked. call is a Client
// method expression, such as (*transport.Client).Stats.
func callAndPrint[Req, Resp any](a *app, o *rpcOptions, call func(*transport.Client, context.Context, Req) (Resp, error), req Req) error {
	return rpcAction(o, func(c *transport.Client, ctx context.Context) error {
		resp, err := call(c, ctx, req)
		if err != nil {
			return err
		}
		return a.printValue(o.raw, resp)
	})
}

// successResponse is what the verbs that only succeed or fail (complete,
// fail, release) print: the procedure's response, {"success":true}.
type successResponse struct {
	Success bool `json:"success"`
}

// settleAndPrint makes one RPC whose response only says it worked, and
// prints {"success":true}. call is a Client method expression, such as
// (*transport.Client).Complete.
func settleAndPrint[Req any](a *app, o *rpcOptions, call func(*transport.Client, context.Context, Req) error, req Req) error {
	return rpcAction(o, func(c *transport.Client, ctx context.Context) error {
		if err := call(c, ctx, req); err != nil {
			return err
		}
		return a.printValue(o.raw, successResponse{Success: true})
	})
}

var enqueueCommand = &command{
	name:     "enqueue",
	synopsis: "leasectl enqueue --resource-type T --resource-id ID --partition-key K [--body DATA | --body-file FILE] [--attr k=v]... [--delay DURATION | --not-before TIME] [flags] | enqueue --batch-file FILE [--delay DURATION]",
	summary:  "enqueue one work item (or a file of them)",
	details: `
Enqueues one work item and prints the enqueue response: the queue's counts,
the item's sequenceId, and duplicate when --request-id was seen before within
the dedupe window. The body is opaque bytes: --body's value (@FILE reads a
file, - reads stdin) or the contents of --body-file.

--delay keeps the item from being leased for that long, --not-before until
that time (RFC 3339); the response echoes the item's notBefore. A dispatcher
that predates delayed enqueue ignores both and enqueues the item ready now:
leasectl then exits non-zero with error.resourcelease.delay_ignored.

With --batch-file it enqueues the items of FILE (- is stdin), given as
{"payloads":[item,...]} or a JSON array of items, in calls of up to 1,000
(enqueueBatch), and prints {"results":[...],"stats"}: each item's sequenceId
or its error. It exits non-zero when any item was refused. --delay (or the
file's "delayMs") delays every item; an item's own "notBefore" delays it.`,
	example: `
leasectl enqueue --service resourcelease-mesh-demo --namespace resourcelease.mesh \
  --resource-type demo.order --resource-id order-42 --partition-key tenant-1 \
  --body '{"message":"hello"}' --attr priority=high --request-id order-42-v1
leasectl enqueue --resource-type demo.order --resource-id order-43 --partition-key tenant-1 --delay 10m
leasectl enqueue --batch-file orders.json`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var (
			item           resourcelease.Item
			body, bodyFile string
			attrs          pairsFlag
		)
		fs.StringVar(&item.ResourceType, "resource-type", "", "the item's `resourceType` (required)")
		fs.StringVar(&item.ResourceID, "resource-id", "", "the item's `resourceId` (required)")
		fs.StringVar(&item.PartitionKey, "partition-key", "", "the item's `partitionKey` (required)")
		fs.StringVar(&item.PayloadEncoding, "encoding", "application/json", "the item's `payloadEncoding`: how its body is encoded")
		fs.StringVar(&item.RequestID, "request-id", "", "the item's `requestId`: a repeated one within the dedupe window enqueues nothing new")
		fs.StringVar(&body, "body", "", "the item's body: `DATA`, @FILE, or - for stdin")
		fs.StringVar(&bodyFile, "body-file", "", "read the item's body from `FILE`")
		fs.Var(&attrs, "attr", "add the attribute `key=value` (repeatable)")
		batchFile := fs.String("batch-file", "", "enqueue the items of `FILE` ({\"payloads\":[...]} or an array; - is stdin) in batches")
		delay := fs.Duration("delay", 0, "do not lease the item (or, with --batch-file, any item) before this `duration` has passed")
		notBefore := fs.String("not-before", "", "do not lease the item before this `time` (RFC 3339)")
		alias(fs, "resource-type", "resourceType")
		alias(fs, "resource-id", "resourceId")
		alias(fs, "partition-key", "partitionKey")
		alias(fs, "encoding", "payloadEncoding")
		alias(fs, "request-id", "requestId")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *delay < 0 {
				return usagef("--delay must not be negative, got %v", *delay)
			}
			if flagGiven(fs, "batch-file") {
				for _, name := range []string{"resource-type", "resource-id", "partition-key", "request-id", "body", "body-file", "attr", "not-before"} {
					if flagGiven(fs, name) {
						return usagef("--batch-file takes the items from the file; --%s does not go with it", name)
					}
				}
				return enqueueFile(a, o, *batchFile, *delay)
			}
			if flagGiven(fs, "not-before") {
				if flagGiven(fs, "delay") {
					return usagef("give --delay or --not-before, not both")
				}
				t, err := time.Parse(time.RFC3339Nano, *notBefore)
				if err != nil {
					return usagef("--not-before %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", *notBefore)
				}
				item.NotBefore = t
			}
			for _, f := range []struct{ name, v string }{
				{"resource-type", item.ResourceType}, {"resource-id", item.ResourceID},
				{"partition-key", item.PartitionKey}, {"encoding", item.PayloadEncoding},
			} {
				if f.v == "" {
					return usagef("--%s is required", f.name)
				}
			}
			switch {
			case flagGiven(fs, "body") && flagGiven(fs, "body-file"):
				return usagef("give --body or --body-file, not both")
			case flagGiven(fs, "body"):
				b, err := a.readValue("body", body)
				if err != nil {
					return err
				}
				item.Body = b
			case flagGiven(fs, "body-file"):
				b, err := a.readFile("body-file", bodyFile)
				if err != nil {
					return err
				}
				item.Body = b
			}
			item.Attributes = attrs.Map()
			return callAndPrint(a, o, (*transport.Client).Enqueue, &resourcelease.EnqueueRequest{Payload: &item, Delay: *delay})
		}
	},
}

// enqueueFile enqueues the items of file (see enqueue --batch-file), each
// delayed by delay, or else by the file's delayMs.
func enqueueFile(a *app, o *rpcOptions, file string, delay time.Duration) error {
	data, err := a.readFile("batch-file", file)
	if err != nil {
		return err
	}
	var req resourcelease.EnqueueBatchRequest
	data = bytes.TrimSpace(data)
	if bytes.HasPrefix(data, []byte("[")) {
		err = json.Unmarshal(data, &req.Payloads)
	} else {
		err = json.Unmarshal(data, &req)
	}
	if err != nil {
		return fmt.Errorf(`--batch-file is not {"payloads":[...]} or an array of items: %w`, err)
	}
	return rpcAction(o, func(c *transport.Client, ctx context.Context) error {
		all := &resourcelease.EnqueueBatchResponse{Results: []resourcelease.EnqueueItemResult{}}
		for start := 0; start < len(req.Payloads); start += resourcelease.MaxBatchItems {
			part := req.Payloads[start:min(start+resourcelease.MaxBatchItems, len(req.Payloads))]
			resp, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: part, Delay: cmp.Or(delay, req.Delay)})
			if err != nil {
				if len(all.Results) > 0 {
					_ = a.printValue(o.raw, all)
					return prefixError(err, "%d items were sent (results above), then enqueueing the rest failed", len(all.Results))
				}
				return err
			}
			all.Results = append(all.Results, resp.Results...)
			all.Stats = resp.Stats
		}
		if err := a.printValue(o.raw, all); err != nil {
			return err
		}
		refused := 0
		var first error
		for _, r := range all.Results {
			if r.Err != nil {
				refused++
				first = cmp.Or(first, r.Err)
			}
		}
		if refused > 0 {
			return prefixError(first, "%d of %d items were refused; the first", refused, len(all.Results))
		}
		return nil
	})
}

var leaseCommand = &command{
	name:     "lease",
	synopsis: "leasectl lease [--peer ID] [--wait DURATION] [--max N] [flags]",
	summary:  "lease the next ready item (or up to --max) and print the lease (with its ownership token)",
	details: `
Leases the oldest ready item and prints the lease: the item, its attempt and
lastError, the ownershipToken, the expiry (leaseExpiresAt, in the
dispatcher's clock), the time it has left (leaseTtlMs) and the advised
heartbeat interval. With --wait it long-polls up to that long for an item to
arrive. When nothing was available it prints null (and exits 0).

With --max N it leases up to N items in one call (leaseBatch) and prints
{"items":[...]}: as soon as one is there, with what else is ready then;
{"items":[]} when nothing came.

The printed lease can be piped into heartbeat, complete, fail and release,
which take its ownershipToken; complete also takes the {"items":[...]} of
--max and completes them all in one call.`,
	example: `
leasectl lease --peer worker-cli --wait 10s > lease.json
leasectl complete --token-file lease.json
leasectl lease --max 32 --raw | leasectl complete`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var (
			peer string
			wait time.Duration
		)
		fs.StringVar(&peer, "peer", "", "the lease's peer `id` (default: the caller)")
		fs.DurationVar(&wait, "wait", 0, "long-poll up to this `duration` for an item")
		maxItems := fs.Int("max", 0, "lease up to `N` items in one call and print {\"items\":[...]} (0: one lease)")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if wait < 0 {
				return usagef("--wait must not be negative, got %v", wait)
			}
			if *maxItems < 0 || *maxItems > resourcelease.MaxBatchItems {
				return usagef("--max must be 0 to %d, got %d", resourcelease.MaxBatchItems, *maxItems)
			}
			if *maxItems > 0 {
				return rpcAction(o, func(c *transport.Client, ctx context.Context) error {
					leases, err := c.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: peer, Wait: wait, MaxItems: *maxItems})
					if err != nil {
						return err
					}
					return a.printValue(o.raw, resourcelease.LeaseBatchResponse{Items: leases})
				})
			}
			return callAndPrint(a, o, (*transport.Client).Lease, &resourcelease.LeaseRequest{PeerID: peer, Wait: wait})
		}
	},
}

// tokenFlags are the ways heartbeat, complete, fail and release take a token.
type tokenFlags struct {
	token, file string
}

func (t *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.token, "token", "", "the ownership token as `JSON` (a token, or a lease as printed by lease)")
	fs.StringVar(&t.file, "token-file", "", "read the token (or a lease) from `FILE`; - is stdin")
}

// resolve finds the token: --token, --token-file, or piped stdin.
func (t *tokenFlags) resolve(a *app, fs *flag.FlagSet) (*resourcelease.OwnershipToken, error) {
	data, err := t.read(a, fs)
	if err != nil {
		return nil, err
	}
	return parseToken(data)
}

// read reads what holds the token: --token, --token-file, or piped stdin.
func (t *tokenFlags) read(a *app, fs *flag.FlagSet) ([]byte, error) {
	var (
		data []byte
		err  error
	)
	switch given := flagGiven(fs, "token"); {
	case given && flagGiven(fs, "token-file"):
		return nil, usagef("give --token or --token-file, not both")
	case given:
		data = []byte(t.token)
	case flagGiven(fs, "token-file"):
		data, err = a.readFile("token-file", t.file)
	case stdinPiped(a.stdin):
		data, err = a.readValue("token", "-")
	default:
		return nil, usagef("an ownership token is required: --token JSON, --token-file FILE, or the output of 'leasectl lease' on stdin")
	}
	return data, err
}

// parseTokens reads several leases or tokens: {"items":[...]} (as lease
// --max prints it) or a JSON array of leases or tokens. many is false for
// anything else (one token or lease, for parseToken).
func parseTokens(data []byte) (tokens []resourcelease.OwnershipToken, many bool) {
	data = bytes.TrimSpace(data)
	var list []json.RawMessage
	if bytes.HasPrefix(data, []byte("[")) {
		if json.Unmarshal(data, &list) != nil {
			return nil, false
		}
	} else {
		var wrapped struct {
			Items *[]json.RawMessage `json:"items"`
		}
		if json.Unmarshal(data, &wrapped) != nil || wrapped.Items == nil {
			return nil, false
		}
		list = *wrapped.Items
	}
	for _, raw := range list {
		tok, err := parseToken(raw)
		if err != nil {
			return nil, false
		}
		tokens = append(tokens, *tok)
	}
	return tokens, true
}

// completeResults is what complete prints for several leases: the
// completeBatch response.
type completeResults = resourcelease.CompleteBatchResponse

// completeAll completes tokens in calls of at most MaxBatchItems and prints
// one {"results":[...]}; it fails when any of them did.
func completeAll(a *app, o *rpcOptions, tokens []resourcelease.OwnershipToken) error {
	return rpcAction(o, func(c *transport.Client, ctx context.Context) error {
		var all []error
		for start := 0; start < len(tokens); start += resourcelease.MaxBatchItems {
			part := tokens[start:min(start+resourcelease.MaxBatchItems, len(tokens))]
			errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: part})
			if err != nil {
				if len(all) > 0 {
					_ = a.printValue(o.raw, completeResults{Results: all})
					return prefixError(err, "%d leases were completed (results above), then completing the rest failed", len(all))
				}
				return err
			}
			all = append(all, errs...)
		}
		if err := a.printValue(o.raw, completeResults{Results: all}); err != nil {
			return err
		}
		failed := 0
		var first error
		for _, e := range all {
			if e != nil {
				failed++
				first = cmp.Or(first, e)
			}
		}
		if failed > 0 {
			return prefixError(first, "%d of %d leases were not completed; the first", failed, len(all))
		}
		return nil
	})
}

// parseToken accepts an ownership token, a lease (its ownershipToken is
// taken) or a request body with an ownershipToken.
func parseToken(data []byte) (*resourcelease.OwnershipToken, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || string(data) == "null" {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired,
			"no ownership token: the input is empty or null (did lease find nothing?)")
	}
	var v struct {
		resourcelease.OwnershipToken
		Nested *resourcelease.OwnershipToken `json:"ownershipToken"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired,
			"the ownership token is not valid JSON: %v", err)
	}
	tok := v.OwnershipToken
	if v.Nested != nil {
		tok = *v.Nested
	}
	if tok.IsZero() {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired,
			`no ownership token in the input: want {"sequenceId","attempt","leaseId"} or a lease`)
	}
	return &tok, nil
}

// tokenVerb is the setup of a verb that acts on one lease (heartbeat, fail,
// release): the RPC flags, the token flags, no arguments, then one call.
// flags registers the verb's own flags after those and returns the action on
// the token.
func tokenVerb(flags func(fs *flag.FlagSet) func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error) func(a *app, fs *flag.FlagSet) func([]string) error {
	return func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var tf tokenFlags
		tf.register(fs)
		act := flags(fs)
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			tok, err := tf.resolve(a, fs)
			if err != nil {
				return err
			}
			return act(a, o, *tok)
		}
	}
}

var heartbeatCommand = &command{
	name:     "heartbeat",
	synopsis: "leasectl heartbeat (--token JSON | --token-file FILE | < lease.json) [flags]",
	summary:  "extend a lease",
	details: `
Extends a live lease by the lease duration and prints the new expiry. The
token is --token, the contents of --token-file, or stdin (a token, or a lease
as printed by 'leasectl lease'). A token whose lease is gone is not-found
error.resourcelease.unknown_token.`,
	example: `
leasectl heartbeat --token '{"sequenceId":7,"attempt":1,"leaseId":"4b6c0c36-8f5c-4cde-9d53-0e7f3c1c2b11"}'`,
	setup: tokenVerb(func(*flag.FlagSet) func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
		return func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
			return callAndPrint(a, o, (*transport.Client).Heartbeat, &resourcelease.HeartbeatRequest{OwnershipToken: tok})
		}
	}),
}

var completeCommand = &command{
	name:     "complete",
	synopsis: "leasectl complete (--token JSON | --token-file FILE | < lease.json) [flags]",
	summary:  "complete a lease (or several): the item is done for good",
	details: `
Completes a live lease: the item is removed for good. The token is --token,
the contents of --token-file, or stdin (a token, or a lease as printed by
'leasectl lease'). A stale token (the lease expired, was completed or failed,
or the item was leased again) is not-found error.resourcelease.unknown_token.

Given several leases or tokens ({"items":[...]} as 'leasectl lease --max'
prints, or a JSON array) it completes them all in one call (completeBatch)
and prints {"results":[...]}: {"success":true} or the error, per lease. It
exits non-zero when any of them failed.`,
	example: `
leasectl lease --raw | leasectl complete
leasectl lease --max 32 --raw | leasectl complete`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var tf tokenFlags
		tf.register(fs)
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			data, err := tf.read(a, fs)
			if err != nil {
				return err
			}
			if tokens, many := parseTokens(data); many {
				return completeAll(a, o, tokens)
			}
			tok, err := parseToken(data)
			if err != nil {
				return err
			}
			return settleAndPrint(a, o, (*transport.Client).Complete, &resourcelease.CompleteRequest{OwnershipToken: *tok})
		}
	},
}

var failCommand = &command{
	name:     "fail",
	synopsis: "leasectl fail (--token JSON | --token-file FILE | < lease.json) [--reason R] [--code C] [--no-requeue] [--meta k=v]... [flags]",
	summary:  "fail a lease: requeue the item, or dead-letter it with --no-requeue",
	details: `
Fails a live lease. By default the item goes back to pending with the next
attempt and the reason and code as its lastError (or is dead-lettered when it
has used its last attempt); --no-requeue dead-letters it at once. The token is
--token, the contents of --token-file, or stdin.`,
	example: `
leasectl lease --raw | leasectl fail --reason "upstream timed out" --code upstream.timeout`,
	setup: tokenVerb(func(fs *flag.FlagSet) func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
		var (
			reason    string
			code      string
			noRequeue bool
			meta      pairsFlag
		)
		fs.StringVar(&reason, "reason", "", "why the work failed: the `text` (the lastError message)")
		fs.StringVar(&code, "code", "", "a stable error `code` (the lastError code)")
		fs.BoolVar(&noRequeue, "no-requeue", false, "dead-letter the item instead of requeueing it")
		fs.Var(&meta, "meta", "add the failure metadata `key=value` (repeatable)")
		return func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
			req := &resourcelease.FailRequest{OwnershipToken: tok, Reason: reason, ErrorCode: code, DeadLetter: noRequeue, Metadata: meta.Map()}
			return settleAndPrint(a, o, (*transport.Client).Fail, req)
		}
	}),
}

var releaseCommand = &command{
	name:     "release",
	synopsis: "leasectl release (--token JSON | --token-file FILE | < lease.json) [--delay DURATION] [flags]",
	summary:  "give a lease back without counting its attempt",
	details: `
Releases a live lease: the item is pending again at once, in its old place,
with its attempt not counted and no backoff (for work this worker will not
do now). With --delay it stays out of reach for that long first. A release
beyond the dispatcher's limit in a row (10 by default) of one item counts as
a failed attempt. The token is --token, the contents of --token-file, or
stdin. A server older than release answers unimplemented.`,
	example: `
leasectl lease --raw | leasectl release --delay 30s`,
	setup: tokenVerb(func(fs *flag.FlagSet) func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
		var delay time.Duration
		fs.DurationVar(&delay, "delay", 0, "keep the item from being leased again for this `duration`")
		return func(a *app, o *rpcOptions, tok resourcelease.OwnershipToken) error {
			if delay < 0 {
				return usagef("--delay must not be negative, got %v", delay)
			}
			return settleAndPrint(a, o, (*transport.Client).Release, &resourcelease.ReleaseRequest{OwnershipToken: tok, Delay: delay})
		}
	}),
}

var statsCommand = &command{
	name:     "stats",
	synopsis: "leasectl stats [flags]",
	summary:  "print the queue's counts",
	details: `
Prints pendingCount, activeLeaseCount, deadLetterCount and backpressureActive.`,
	example: `
leasectl stats --service resourcelease-mesh-demo --namespace resourcelease.mesh`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			return callAndPrint(a, o, (*transport.Client).Stats, &resourcelease.StatsRequest{})
		}
	},
}

// drainSummary is what drain --out prints.
type drainSummary struct {
	DrainedCount int    `json:"drainedCount"`
	File         string `json:"file"`
}

// defaultPageBytes is the approximate JSON size of one drain page and one
// restore batch: well under the handler's default 4 MiB request-body limit,
// so that whatever one drain page returns can be restored in one request.
const defaultPageBytes = 3 << 20

var drainCommand = &command{
	name:     "drain",
	synopsis: "leasectl drain [--out FILE [--force]] [--page-bytes N] [flags]",
	summary:  "remove every pending item and save them (for restore)",
	details: `
Removes every pending item from the queue (leases are untouched) and writes
them as {"items":[...]} to --out, or prints them without it. restore --in
takes that file back, on this dispatcher or another.

The items are drained in pages of about --page-bytes of JSON each, oldest
first (0: everything in one response, as servers without paging do). With
--out each page is appended to the file and synced to disk before the next
page is asked for, so a failure can lose at most the one page in flight.

The file is created before anything is drained and written atomically; an
existing file is not overwritten without --force. If the drain fails after
some pages, the items already drained are still written to --out and the
error says how many; run drain again for the rest. Should the file fail to
be written, the drained items are printed on stdout instead so that they are
not lost.`,
	example: `
leasectl drain --out drained.json
leasectl restore --in drained.json --url http://other-host:7420/yarpc/v1`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var (
			out       string
			force     bool
			pageBytes int64
		)
		fs.StringVar(&out, "out", "", "write the drained items to `FILE` (- is stdout)")
		fs.BoolVar(&force, "force", false, "overwrite --out if it exists")
		fs.Int64Var(&pageBytes, "page-bytes", defaultPageBytes, "drain in pages of about `N` bytes of JSON (0: one page)")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if pageBytes < 0 {
				return usagef("--page-bytes must not be negative, got %d", pageBytes)
			}
			if out == "" || out == "-" {
				return drainToStdout(a, o, pageBytes)
			}
			if _, err := os.Stat(out); err == nil && !force {
				return usagef("--out %s exists; use --force to overwrite it", out)
			}
			// Create the file before draining: a drain whose items cannot be
			// saved is the one way this verb could lose work.
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
			if err != nil {
				return fmt.Errorf("cannot create --out: %w", err)
			}
			defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
			defer tmp.Close()
			return drainToFile(a, o, pageBytes, tmp, out)
		}
	},
}

// drainPages drains page by page, calling page with each page's items before
// asking for the next, until no pending items remain, page fails or a drain
// call fails. It returns the error of the drain call, or page's.
func drainPages(o *rpcOptions, pageBytes int64, page func(items []resourcelease.PendingItem) error) (callErr, pageErr error) {
	c, err := o.client(transport.ClientConfig{})
	if err != nil {
		return err, nil
	}
	defer c.Close()
	for {
		ctx, cancel := o.callContext() // --ttl bounds each page
		resp, err := c.Drain(ctx, &resourcelease.DrainRequest{MaxBytes: pageBytes})
		cancel()
		if err != nil {
			return err, nil
		}
		if err := page(resp.Items); err != nil {
			return nil, err
		}
		// An older server ignores MaxBytes, drains everything and never says more.
		if !resp.More || len(resp.Items) == 0 {
			return nil, nil
		}
	}
}

// drainToStdout drains in pages and prints all the items as one
// {"items":[...]}. Should a page fail, the items already drained are still
// printed.
func drainToStdout(a *app, o *rpcOptions, pageBytes int64) error {
	all := []resourcelease.PendingItem{}
	callErr, _ := drainPages(o, pageBytes, func(items []resourcelease.PendingItem) error {
		all = append(all, items...)
		return nil
	})
	if callErr != nil && len(all) == 0 {
		return callErr
	}
	if err := a.printValue(o.raw, &resourcelease.DrainResponse{Items: all}); err != nil {
		return err
	}
	if callErr != nil {
		return prefixError(callErr, "%d items were drained and printed, then draining the rest failed", len(all))
	}
	return nil
}

// drainToFile drains in pages into tmp, syncing each page before the next
// is asked for, then renames tmp to out. The file is {"items":[...]}, as
// restore reads it.
func drainToFile(a *app, o *rpcOptions, pageBytes int64, tmp *os.File, out string) error {
	var (
		all     []resourcelease.PendingItem // printed on stdout if the file fails
		fileErr error
	)
	write := func(data []byte) {
		if fileErr == nil {
			_, fileErr = tmp.Write(data)
		}
	}
	write([]byte("{\n  \"items\": ["))
	callErr, _ := drainPages(o, pageBytes, func(items []resourcelease.PendingItem) error {
		for i := range items {
			data, err := json.MarshalIndent(&items[i], "    ", "  ")
			if err != nil && fileErr == nil {
				fileErr = err
			}
			if len(all) > 0 {
				write([]byte(","))
			}
			write([]byte("\n    "))
			write(data)
			all = append(all, items[i])
		}
		if fileErr == nil {
			fileErr = tmp.Sync()
		}
		return nil // keep draining even if the file failed: the items are kept in all
	})
	if callErr != nil && len(all) == 0 {
		return callErr
	}
	if len(all) > 0 {
		write([]byte("\n  "))
	}
	write([]byte("]\n}\n"))
	if fileErr == nil {
		fileErr = tmp.Sync()
	}
	if fileErr == nil {
		fileErr = tmp.Close()
	}
	if fileErr == nil {
		fileErr = os.Rename(tmp.Name(), out)
	}
	if fileErr != nil {
		data, err := json.MarshalIndent(&resourcelease.DrainResponse{Items: all}, "", "  ")
		if err != nil {
			return err
		}
		_, _ = a.stdout.Write(append(data, '\n'))
		msg := fmt.Sprintf("drained %d items but could not write --out (%v); they were printed on stdout instead", len(all), fileErr)
		if callErr != nil {
			return prefixError(callErr, "%s; then draining the rest failed", msg)
		}
		return errors.New(msg)
	}
	if callErr != nil {
		return prefixError(callErr, "%d items were drained and saved to %s, then draining the rest failed (run drain again)", len(all), out)
	}
	return a.printValue(o.raw, drainSummary{DrainedCount: len(all), File: out})
}

// prefixError puts context before err's message, keeping its status and code
// when it is an RPC error (report prints those, not the wrapping).
func prefixError(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	var e *resourcelease.Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		c := *resourcelease.AsError(err)
		c.Message = msg + ": " + c.Message
		return &c
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// restoreBatches splits items, in order, into batches of about maxBytes of
// JSON each (their encoded size, measured), at least one item per batch;
// maxBytes <= 0 is one batch.
func restoreBatches(items []resourcelease.PendingItem, maxBytes int64) ([][]resourcelease.PendingItem, error) {
	if maxBytes <= 0 || len(items) == 0 {
		return [][]resourcelease.PendingItem{items}, nil
	}
	var (
		batches [][]resourcelease.PendingItem
		start   int
		size    int64
	)
	for i := range items {
		data, err := json.Marshal(&items[i])
		if err != nil {
			return nil, fmt.Errorf("items[%d]: %w", i, err)
		}
		n := int64(len(data)) + 1 // and a comma
		if i > start && size+n > maxBytes {
			batches = append(batches, items[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(batches, items[start:]), nil
}

var restoreCommand = &command{
	name:     "restore",
	synopsis: "leasectl restore [--in FILE | < drained.json] [--batch-bytes N] [flags]",
	summary:  "put drained items back (from drain's output)",
	details: `
Restores items written by drain: {"items":[...]} or a bare array, from --in
(- is stdin) or piped stdin. Items keep their sequenceId, attempt, enqueuedAt
and lastError.

The items are sent in order, in batches of about --batch-bytes of JSON each
(0: one request), so that no request exceeds the server's body limit. Each
batch is all or nothing; a sequenceId already present is already-exists
resourcelease.restore.duplicate_sequence. When a batch fails, restore stops
and the error says which batch failed and how many items the batches before
it restored.`,
	example: `
leasectl restore --in drained.json`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var (
			in         string
			batchBytes int64
		)
		fs.StringVar(&in, "in", "", "read the items from `FILE` (- is stdin)")
		fs.Int64Var(&batchBytes, "batch-bytes", defaultPageBytes, "restore in batches of about `N` bytes of JSON (0: one request)")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if batchBytes < 0 {
				return usagef("--batch-bytes must not be negative, got %d", batchBytes)
			}
			var (
				data []byte
				err  error
			)
			switch {
			case in != "":
				data, err = a.readFile("in", in)
			case stdinPiped(a.stdin):
				data, err = a.readValue("in", "-")
			default:
				return usagef("--in FILE is required (or pipe the items on stdin)")
			}
			if err != nil {
				return err
			}
			var req resourcelease.RestoreRequest
			data = bytes.TrimSpace(data)
			if bytes.HasPrefix(data, []byte("[")) {
				err = json.Unmarshal(data, &req.Items)
			} else {
				err = json.Unmarshal(data, &req)
			}
			if err != nil {
				return fmt.Errorf("the items to restore are not drain output ({\"items\":[...]}): %w", err)
			}
			batches, err := restoreBatches(req.Items, batchBytes)
			if err != nil {
				return err
			}
			c, err := o.client(transport.ClientConfig{})
			if err != nil {
				return err
			}
			defer c.Close()
			total, first := 0, 0
			for i, b := range batches {
				ctx, cancel := o.callContext() // --ttl bounds each batch
				resp, err := c.Restore(ctx, &resourcelease.RestoreRequest{Items: b})
				cancel()
				if err != nil {
					if len(batches) == 1 {
						return err
					}
					return prefixError(err, "batch %d of %d (items %d to %d) failed and restore stopped; %d items were restored before it",
						i+1, len(batches), first, first+len(b)-1, total)
				}
				total += resp.RestoredCount
				first += len(b)
			}
			return a.printValue(o.raw, &resourcelease.RestoreResponse{RestoredCount: total})
		}
	},
}

var deadLettersCommand = &command{
	name:     "deadletters",
	synopsis: "leasectl deadletters [list] [--limit N] | deadletters (redrive|purge) (ID... | --all) [flags]",
	summary:  "list, redrive or purge dead letters",
	details: `
deadletters (or deadletters list) prints the dead letters, oldest first, with
the reason and time each was dead-lettered; --limit bounds how many.

deadletters redrive ID... moves the given dead letters back to pending with
attempt 1; deadletters purge ID... deletes them. Ids are sequence ids,
as separate arguments or comma-separated; --all selects every dead letter
(required when no ids are given, so that nothing is purged by accident).`,
	example: `
leasectl deadletters --limit 20
leasectl deadletters redrive 17 18
leasectl deadletters purge --all`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.rpcFlags(fs)
		var (
			limit int
			all   bool
		)
		fs.IntVar(&limit, "limit", 0, "list at most `N` dead letters (default all)")
		fs.BoolVar(&all, "all", false, "redrive or purge every dead letter")
		return func(args []string) error {
			action := "list"
			if len(args) > 0 {
				action, args = args[0], args[1:]
			}
			switch action {
			case "list":
				if err := noArgs(args); err != nil {
					return err
				}
				if limit < 0 {
					return usagef("--limit must not be negative, got %d", limit)
				}
				return callAndPrint(a, o, (*transport.Client).DeadLetters, &resourcelease.DeadLettersRequest{Limit: limit})
			case "redrive", "purge":
			default:
				return usagef("unknown action %q: want list, redrive or purge", action)
			}
			ids, err := parseIDs(args)
			switch {
			case err != nil:
				return err
			case len(ids) == 0 && !all:
				return usagef("%s needs sequence ids, or --all for every dead letter", action)
			case len(ids) > 0 && all:
				return usagef("give sequence ids or --all, not both")
			}
			if action == "redrive" {
				return callAndPrint(a, o, (*transport.Client).Redrive, &resourcelease.RedriveRequest{SequenceIDs: ids, All: all})
			}
			return callAndPrint(a, o, (*transport.Client).Purge, &resourcelease.PurgeRequest{SequenceIDs: ids, All: all})
		}
	},
}
