package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// itemsMaxPages bounds items --all, so that a listing that never ends (a
// server that keeps returning a cursor) cannot run forever.
const itemsMaxPages = 10_000

var itemsCommand = &command{
	name:     "items",
	synopsis: "leasectl items [--state pending|leased|dead] [--resource-type T] [--partition-key K] [--resource-id ID] [--after N] [--limit N | --all] [--control-url URL]",
	summary:  "list pending, leased or dead-lettered items (paged, filtered)",
	details: `
Prints one page of the items in --state (pending by default), oldest
sequenceId first, from the control plane (` + control.DefaultPrefix + `/items): each
item's payload without its body (bodySize says how large it is), attempt,
lastError, and the lease's owner and expiry or the dead letter's reason.
The filters are exact matches. When the page has a "nextAfter", pass it as
--after for the next page; --all follows every page and prints all the items
as one {"items":[...]}.`,
	example: `
leasectl items --state dead --partition-key tenant-1
leasectl items --state pending --after 120 --limit 20
leasectl items --state leased --all | jq -r '.items[].leaseOwner'`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.controlFlags(fs)
		var (
			req   resourcelease.ListItemsRequest
			state string
			all   bool
		)
		fs.StringVar(&state, "state", string(resourcelease.ItemPending), "the `state` to list: pending, leased or dead")
		fs.StringVar(&req.ResourceType, "resource-type", "", "only items of this `resourceType`")
		fs.StringVar(&req.PartitionKey, "partition-key", "", "only items of this `partitionKey`")
		fs.StringVar(&req.ResourceID, "resource-id", "", "only items of this `resourceId`")
		fs.Int64Var(&req.After, "after", 0, "list items with a sequenceId above `N` (a page's nextAfter)")
		fs.IntVar(&req.Limit, "limit", 0, "at most `N` items per page (default 50, at most 500)")
		fs.BoolVar(&all, "all", false, "follow every page and print all the items")
		alias(fs, "resource-type", "resourceType")
		alias(fs, "resource-id", "resourceId")
		alias(fs, "partition-key", "partitionKey")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			req.State = resourcelease.ItemState(state)
			switch {
			case !req.State.Valid():
				return usagef("--state must be pending, leased or dead, got %q", state)
			case req.After < 0:
				return usagef("--after must not be negative, got %d", req.After)
			case req.Limit < 0:
				return usagef("--limit must not be negative, got %d", req.Limit)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if !all {
				page, err := c.Items(a.ctx, &req)
				if err != nil {
					return err
				}
				return a.printValue(o.raw, page)
			}
			out := resourcelease.ListItemsResponse{Items: []resourcelease.ItemInfo{}}
			for range itemsMaxPages {
				page, err := c.Items(a.ctx, &req)
				if err != nil {
					return err
				}
				out.Items = append(out.Items, page.Items...)
				if page.NextAfter <= req.After {
					return a.printValue(o.raw, out)
				}
				req.After = page.NextAfter
			}
			return fmt.Errorf("the listing did not end after %d pages", itemsMaxPages)
		}
	},
}

var itemCommand = &command{
	name:     "item",
	synopsis: "leasectl item SEQUENCE_ID [--control-url URL]",
	summary:  "print one item with its body and its recent replication events",
	details: `
Prints the item with the given sequenceId, wherever it is (pending, leased or
dead-lettered), from the control plane (` + control.DefaultPrefix + `/items/{sequenceId}):
its payload with the body (base64 in JSON), attempt, lastError, lease or
dead-letter details, and the replication events that name it among the
newest ones the server searches (eventWindow). An item that is no longer in
the queue (completed, purged or drained) is not-found.`,
	example: `
leasectl item 42
leasectl item 42 | jq -r .item.payload.body | base64 -d`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.controlFlags(fs)
		return func(args []string) error {
			if len(args) != 1 {
				return usagef("give exactly one sequence id")
			}
			seq, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || seq <= 0 {
				return usagef("%q is not a sequence id (a positive integer)", args[0])
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			detail, err := c.Item(a.ctx, seq)
			if err != nil {
				return err
			}
			return a.printValue(o.raw, detail)
		}
	},
}

// pauseVerb builds the pause and resume verbs, which differ only in the call.
func pauseVerb(name, summary, details string, call func(c *control.Client, a *app) (*control.PauseState, error)) *command {
	return &command{
		name:     name,
		synopsis: "leasectl " + name + " [--control-url URL] [--bearer-token T]",
		summary:  summary,
		details:  details,
		example: `
leasectl pause --control-url http://127.0.0.1:5158 --bearer-token "$TOKEN"
leasectl resume`,
		setup: func(a *app, fs *flag.FlagSet) func([]string) error {
			o := a.controlFlags(fs)
			return func(args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				c, err := o.client()
				if err != nil {
					return err
				}
				defer c.Close()
				st, err := call(c, a)
				if err != nil {
					return err
				}
				return a.printValue(o.raw, st)
			}
		},
	}
}

var pauseCommand = pauseVerb("pause", "stop the dispatcher from granting leases", `
Pauses leasing (POST `+control.DefaultPrefix+`/pause): lease requests get
nothing and long-polls wait, while enqueue, heartbeat, complete, fail, drain,
restore and the dead-letter calls keep working; stats shows "paused": true.
The pause lasts until resume; with memory or SQLite storage also until the
dispatcher restarts (it is kept in memory), while on PostgreSQL it pauses
every dispatcher of the queue and outlives their restarts. Prints
{"paused":true}.`,
	func(c *control.Client, a *app) (*control.PauseState, error) { return c.Pause(a.ctx) })

var resumeCommand = pauseVerb("resume", "let a paused dispatcher grant leases again", `
Resumes leasing (POST `+control.DefaultPrefix+`/resume); the long-polls that
waited through the pause are served first. Prints {"paused":false}.`,
	func(c *control.Client, a *app) (*control.PauseState, error) { return c.Resume(a.ctx) })
