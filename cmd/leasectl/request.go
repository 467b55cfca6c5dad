package main

import (
	"encoding/base64"
	"flag"
	"net/http"
	"strings"

	"github.com/leasemesh/leasemesh/transport"
)

var requestCommand = &command{
	name:     "request",
	synopsis: "leasectl request --procedure P [--transport http] [--url URL] [--service S] [--encoding application/json] [--body JSON|@FILE|- | --body-file FILE | --body-base64 B64] [flags]",
	summary:  "send one raw call and print its response (the flags of `omnirelay request`)",
	details: `
Sends one call of the wire protocol and prints the response JSON: indented by
default, as received with --raw. The flags are those of OmniRelay's
"omnirelay request"; only --transport http and the JSON encoding are
supported: --encoding json or application/json, sent as yarpc's
"Rpc-Encoding: json" (a yarpc-go server refuses any other name).

The body is --body's value (--body @FILE reads a file and --body - reads
stdin), the contents of --body-file, or --body-base64 decoded. Without any of
them, piped stdin is the body; with no stdin either, the body is empty ({}).
A procedure without "::" gets the namespace: --procedure stats calls
"<namespace>::stats". --header adds a header (repeatable; it wins over the
headers leasectl sets itself). --timeout is another name of --ttl, and
--profile json or json:pretty is accepted, for scripts written for
omnirelay.`,
	example: `
leasectl request \
  --transport http \
  --url http://127.0.0.1:7420/yarpc/v1 \
  --service resourcelease-mesh-demo \
  --procedure resourcelease.mesh::enqueue \
  --encoding application/json \
  --body '{"payload":{"resourceType":"demo.order","resourceId":"cli","partitionKey":"tenant-cli","payloadEncoding":"application/json","body":"eyJtZXNzYWdlIjoiY2xpIn0="}}'`,
	setup: setupRequest,
}

func setupRequest(a *app, fs *flag.FlagSet) func([]string) error {
	o := a.rpcFlags(fs)
	var (
		transportName, procedure, encoding, profile string
		body, bodyFile, bodyBase64                  string
		headers                                     pairsFlag
	)
	fs.StringVar(&transportName, "transport", "http", "the `transport`: only http is supported")
	fs.StringVar(&procedure, "procedure", "", "the `procedure` to call, \"<namespace>::<verb>\" (required)")
	fs.StringVar(&encoding, "encoding", "application/json", "the request `encoding`: json or application/json, both sent as Rpc-Encoding: json")
	fs.StringVar(&body, "body", "", "the request body: `JSON`, @FILE, or - for stdin")
	fs.StringVar(&bodyFile, "body-file", "", "read the request body from `FILE` (- is stdin)")
	fs.StringVar(&bodyBase64, "body-base64", "", "the request body, base64-encoded")
	fs.StringVar(&profile, "profile", "", "the omnirelay codec `profile`: json or json:pretty (the only ones for JSON)")
	fs.Var(&headers, "header", "add the header `key=value` to the request (repeatable)")
	alias(fs, "ttl", "timeout")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if !strings.EqualFold(transportName, "http") {
			return usagef("only --transport http is supported, got %q", transportName)
		}
		if strings.TrimSpace(procedure) == "" {
			return usagef("--procedure is required")
		}
		if !strings.Contains(procedure, "::") {
			procedure = transport.Procedure(o.namespace, procedure)
		}
		switch strings.ToLower(encoding) {
		case "json", "application/json":
		default:
			return usagef("only the json and application/json encodings are supported, got %q", encoding)
		}
		switch strings.ToLower(profile) {
		case "", "json", "json:pretty":
		default:
			return usagef("only the json and json:pretty profiles are supported, got %q", profile)
		}
		sources := 0
		for _, name := range []string{"body", "body-file", "body-base64"} {
			if flagGiven(fs, name) {
				sources++
			}
		}
		if sources > 1 {
			return usagef("give one of --body, --body-file and --body-base64")
		}
		var (
			data []byte
			err  error
		)
		switch {
		case flagGiven(fs, "body"):
			data, err = a.readValue("body", body)
		case flagGiven(fs, "body-file"):
			data, err = a.readFile("body-file", bodyFile)
		case flagGiven(fs, "body-base64"):
			data, err = base64.StdEncoding.DecodeString(strings.TrimSpace(bodyBase64))
			if err != nil {
				return usagef("--body-base64 is not base64: %v", err)
			}
		case stdinPiped(a.stdin):
			data, err = a.readValue("body", "-")
		}
		if err != nil {
			return err
		}

		// The Client sends every header yarpc requires (Rpc-Encoding: json
		// for either encoding name); the extra headers go through a round
		// tripper of our own.
		set := http.Header{}
		for _, kv := range headers.pairs {
			set.Set(kv[0], kv[1])
		}
		base := http.DefaultTransport.(*http.Transport).Clone()
		defer base.CloseIdleConnections()
		hc := &http.Client{Transport: headerTransport{base: base, set: set}}

		c, err := o.client(transport.ClientConfig{HTTPClient: hc})
		if err != nil {
			return err
		}
		ctx, cancel := o.callContext()
		defer cancel()
		out, err := c.Call(ctx, procedure, data)
		if err != nil {
			return err
		}
		return a.printJSON(o.raw, out)
	}
}

// headerTransport sets headers on every request it sends.
type headerTransport struct {
	base http.RoundTripper
	set  http.Header
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.set {
		r.Header[k] = v
	}
	return t.base.RoundTrip(r)
}
