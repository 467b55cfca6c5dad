package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// ClientConfig configures NewClient. The zero value of every
// field means its documented default; a bad value makes NewClient
// return an error.
type ClientConfig struct {
	// HTTPClient makes the requests. Defaults to a client of the
	// Client's own (released by Close).
	HTTPClient *http.Client
	// TLS, when set, is the TLS configuration of the Client's own HTTP
	// client (transport.TLSConfig.ClientTLS builds one). It needs an
	// https:// URL and cannot be combined with HTTPClient. Defaults to nil:
	// an https:// URL is verified against the system's roots.
	TLS *tls.Config
	// BearerToken, when set, is sent as "Authorization: Bearer <token>", for
	// a control plane protected by BearerToken.
	BearerToken string
	// Timeout bounds a call whose context has no deadline. Defaults to
	// DefaultClientTimeout; negative means no bound but the context's.
	Timeout time.Duration
	// MaxResponseBytes bounds a response body; a larger one is an error with
	// code CodeResponseTooLarge. Defaults to DefaultMaxResponseBytes; negative
	// is an error.
	MaxResponseBytes int64
}

// Client is the Go client of the control plane served by
// NewHandler. Errors are *resourcelease.Error rebuilt from the
// response, as with Client; a server that cannot be reached gives status
// unavailable with code CodeTransportUnavailable.
//
// A Client is safe for concurrent use.
type Client struct {
	base          string // scheme://host/prefix, no trailing slash
	authorization string
	hc            *http.Client
	ownsHC        bool
	timeout       time.Duration // 0: none
	maxResponse   int64
}

// NewClient returns a client of the control plane at rawURL. When
// rawURL has no path (for the demo, "http://127.0.0.1:5158"),
// DefaultPrefix is added; otherwise its path is the handler's prefix.
func NewClient(rawURL string, opts ClientConfig) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "control: NewClient: invalid URL %q: %v", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "control: NewClient: invalid URL %q: want http:// or https:// and a host", rawURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "control: NewClient: invalid URL %q: it must not have a query or fragment", rawURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if u.Path == "" {
		u.Path = DefaultPrefix
	}
	if err := wire.CheckClientTLS("control: NewClient", u, opts.HTTPClient, opts.TLS); err != nil {
		return nil, err
	}
	c := &Client{
		base: u.String(),
		hc:   opts.HTTPClient,
	}
	if tok := opts.BearerToken; tok != "" {
		if wire.HeaderSafe(tok, len(tok)) != tok || strings.TrimSpace(tok) != tok {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "control: NewClient: BearerToken must be a valid header value without surrounding white space")
		}
		c.authorization = "Bearer " + tok
	}
	if c.timeout, c.maxResponse, err = wire.CallLimits("NewClient", opts.Timeout, opts.MaxResponseBytes); err != nil {
		return nil, err
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: wire.NewHTTPTransport(opts.TLS)}
		c.ownsHC = true
	}
	return c, nil
}

// URL returns the control plane's URL with its prefix, e.g.
// "http://127.0.0.1:5158/omnirelay/control".
func (c *Client) URL() string { return c.base }

// Close releases the idle connections of the Client's own HTTP client
// (not of one given in ClientConfig.HTTPClient). The Client
// stays usable. It always returns nil.
func (c *Client) Close() error {
	if c.ownsHC {
		c.hc.CloseIdleConnections()
	}
	return nil
}

// do sends one request to path (below the prefix, with its query) and
// returns the status code and body of a 2xx response.
func (c *Client) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument,
				Message: "transport: cannot encode the request: " + err.Error(), Err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.authorization != "" {
		req.Header.Set("Authorization", c.authorization)
	}
	resp, out, _, err := wire.Do(c.hc, req, c.maxResponse, "control "+path)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, nil, wire.DecodeError(resp, out)
	}
	return resp.StatusCode, out, nil
}

// controlCall sends one request and decodes its JSON response into a new T.
func controlCall[T any](ctx context.Context, c *Client, method, path string, body any) (*T, error) {
	_, out, err := c.do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(out, v); err != nil {
		return nil, wire.MalformedResponse("control "+path, err)
	}
	return v, nil
}

// Peers returns the JSON of GET /peers as it is (the shape is the server's
// Peers source; for the demo, the peerhealth diagnostics payload).
func (c *Client) Peers(ctx context.Context) (json.RawMessage, error) {
	_, out, err := c.do(ctx, http.MethodGet, "/peers", nil)
	if err != nil {
		return nil, err
	}
	if !json.Valid(out) {
		return nil, wire.MalformedResponse("control /peers", fmt.Errorf("not JSON"))
	}
	return json.RawMessage(out), nil
}

// Backpressure returns the latest backpressure signal, or (nil, nil) when
// there has been none yet.
func (c *Client) Backpressure(ctx context.Context) (*resourcelease.BackpressureSignal, error) {
	code, out, err := c.do(ctx, http.MethodGet, "/backpressure", nil)
	if err != nil || code == http.StatusNoContent {
		return nil, err
	}
	var s resourcelease.BackpressureSignal
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, wire.MalformedResponse("control /backpressure", err)
	}
	return &s, nil
}

// Replication returns up to limit replication events with sequence numbers
// above since; limit <= 0 means the server's default (DefaultReplicationLimit).
// To follow the log, call it again with the page's NextSince.
func (c *Client) Replication(ctx context.Context, since int64, limit int) (*ReplicationPage, error) {
	q := url.Values{"since": {strconv.FormatInt(since, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return controlCall[ReplicationPage](ctx, c, http.MethodGet, "/replication?"+q.Encode(), nil)
}

// Stats returns the queue's counts (GET /stats).
func (c *Client) Stats(ctx context.Context) (*resourcelease.Stats, error) {
	return controlCall[resourcelease.Stats](ctx, c, http.MethodGet, "/stats", nil)
}

// Drain removes and returns every pending item (POST /drain).
func (c *Client) Drain(ctx context.Context) (*resourcelease.DrainResponse, error) {
	return controlCall[resourcelease.DrainResponse](ctx, c, http.MethodPost, "/drain", struct{}{})
}

// DrainPage removes and returns the oldest pending items within req's limits
// (POST /drain with req as the body); More says whether any remain. A nil or
// empty req drains everything, as Drain does.
func (c *Client) DrainPage(ctx context.Context, req *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	return controlCall[resourcelease.DrainResponse](ctx, c, http.MethodPost, "/drain", wire.OrEmpty(req))
}

// Restore puts drained items back (POST /restore).
func (c *Client) Restore(ctx context.Context, req *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	return controlCall[resourcelease.RestoreResponse](ctx, c, http.MethodPost, "/restore", wire.OrEmpty(req))
}

// DeadLetters lists up to limit dead letters, oldest first; limit <= 0 lists
// all (GET /deadletters).
func (c *Client) DeadLetters(ctx context.Context, limit int) (*resourcelease.DeadLettersResponse, error) {
	path := "/deadletters"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	return controlCall[resourcelease.DeadLettersResponse](ctx, c, http.MethodGet, path, nil)
}

// Redrive moves the given dead letters back to pending with attempt 1
// (POST /deadletters/redrive). ids must not be empty: the server refuses an
// empty selection (invalid-argument, resourcelease.CodeSelectionRequired); RedriveAll redrives
// every dead letter.
func (c *Client) Redrive(ctx context.Context, ids []int64) (*resourcelease.RedriveResponse, error) {
	return controlCall[resourcelease.RedriveResponse](ctx, c, http.MethodPost, "/deadletters/redrive",
		&DeadLetterSelection{SequenceIDs: ids})
}

// RedriveAll moves every dead letter back to pending with attempt 1.
func (c *Client) RedriveAll(ctx context.Context) (*resourcelease.RedriveResponse, error) {
	return controlCall[resourcelease.RedriveResponse](ctx, c, http.MethodPost, "/deadletters/redrive",
		&DeadLetterSelection{All: true})
}

// Purge deletes the given dead letters (POST /deadletters/purge). ids must
// not be empty, as for Redrive; PurgeAll deletes every dead letter.
func (c *Client) Purge(ctx context.Context, ids []int64) (*resourcelease.PurgeResponse, error) {
	return controlCall[resourcelease.PurgeResponse](ctx, c, http.MethodPost, "/deadletters/purge",
		&DeadLetterSelection{SequenceIDs: ids})
}

// PurgeAll deletes every dead letter.
func (c *Client) PurgeAll(ctx context.Context) (*resourcelease.PurgeResponse, error) {
	return controlCall[resourcelease.PurgeResponse](ctx, c, http.MethodPost, "/deadletters/purge",
		&DeadLetterSelection{All: true})
}

// Items returns a page of the items in req.State (GET /items); a nil req
// or an empty State lists pending items. Pass the page's NextAfter as the
// next req.After until it is zero.
func (c *Client) Items(ctx context.Context, req *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error) {
	q := url.Values{}
	if req != nil {
		for k, v := range map[string]string{
			"state": string(req.State), "resourceType": req.ResourceType,
			"partitionKey": req.PartitionKey, "resourceId": req.ResourceID,
		} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if req.After != 0 {
			q.Set("after", strconv.FormatInt(req.After, 10))
		}
		if req.Limit != 0 {
			q.Set("limit", strconv.Itoa(req.Limit))
		}
	}
	path := "/items"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return controlCall[resourcelease.ListItemsResponse](ctx, c, http.MethodGet, path, nil)
}

// Item returns the item with the given sequence id, with its body and its
// recent replication events (GET /items/{sequenceId}); not-found
// (resourcelease.ErrItemNotFound) when no pending, leased or dead item has it.
func (c *Client) Item(ctx context.Context, sequenceID int64) (*ItemDetail, error) {
	return controlCall[ItemDetail](ctx, c, http.MethodGet, "/items/"+strconv.FormatInt(sequenceID, 10), nil)
}

// Pause stops the dispatcher from granting leases (POST /pause).
func (c *Client) Pause(ctx context.Context) (*PauseState, error) {
	return controlCall[PauseState](ctx, c, http.MethodPost, "/pause", struct{}{})
}

// Resume lets the dispatcher grant leases again (POST /resume).
func (c *Client) Resume(ctx context.Context) (*PauseState, error) {
	return controlCall[PauseState](ctx, c, http.MethodPost, "/resume", struct{}{})
}
