package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the call failed: the error's status and code are printed
	exitUsage = 2 // the command line is wrong: a one-line hint is printed
)

// Defaults, each overridable by the environment variable named next to it.
const (
	defaultURL        = "http://127.0.0.1:7420/yarpc/v1" // LEASECTL_URL
	defaultControlURL = "http://127.0.0.1:5158"          // LEASECTL_CONTROL_URL
	defaultNamespace  = transport.DefaultNamespace       // LEASECTL_NAMESPACE
	defaultCaller     = "leasectl"                       // LEASECTL_CALLER
)

// app is one run of leasectl: its streams, environment and context.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// run runs leasectl with args (without the program name) and returns the exit
// status. It is main without the process: tests call it directly or run the
// built binary.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return a.main(args)
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// command is one verb.
type command struct {
	name     string
	synopsis string // "leasectl stats [flags]"
	summary  string // one line, for the verb list
	details  string // what it does, for `leasectl help <verb>`
	example  string
	// setup registers the verb's flags on fs and returns the action, which
	// gets the positional arguments once the flags are parsed.
	setup func(a *app, fs *flag.FlagSet) func(args []string) error
}

// commands lists the verbs in the order `leasectl help` shows them; it is
// filled in by init to break the reference cycle through the help verb.
var commands []*command

func init() {
	commands = []*command{
		requestCommand, enqueueCommand, leaseCommand, heartbeatCommand, completeCommand,
		failCommand, releaseCommand, statsCommand, drainCommand, restoreCommand, deadLettersCommand,
		itemsCommand, itemCommand, pauseCommand, resumeCommand, peersCommand, tailCommand,
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (a *app) main(args []string) int {
	if len(args) == 0 {
		a.printUsage(a.stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return a.help(args[1:])
	}
	cmd := lookup(args[0])
	if cmd == nil {
		fmt.Fprintf(a.stderr, "leasectl: unknown verb %q\nRun 'leasectl help' for the list of verbs.\n", args[0])
		return exitUsage
	}
	fs := newFlagSet(cmd.name)
	action := cmd.setup(a, fs)
	pos, err := parseFlags(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		a.printCommandHelp(a.stdout, cmd)
		return exitOK
	}
	switch {
	case err != nil:
		err = &usageError{msg: err.Error()}
	default:
		err = action(pos)
	}
	return a.report(cmd.name, err)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("leasectl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by report, help by printCommandHelp
	return fs
}

// parseFlags parses args, letting flags and positional arguments mix
// (`deadletters redrive 4 5 --url U`); everything after "--" is positional.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// report prints err and returns the exit status.
func (a *app) report(verb string, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "leasectl %s: %v\nRun 'leasectl help %s' for usage.\n", verb, err, verb)
		return exitUsage
	}
	var e *resourcelease.Error
	if !errors.As(err, &e) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// A local failure (a file that cannot be read, say): its own text.
		fmt.Fprintf(a.stderr, "error: %v\n", err)
		return exitError
	}
	e = resourcelease.AsError(err)
	if e.Code == "" { // a yarpc server's error names only its status
		fmt.Fprintf(a.stderr, "error: %s: %s\n", e.Status, e.Message)
	} else {
		fmt.Fprintf(a.stderr, "error: %s %s: %s\n", e.Status, e.Code, e.Message)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		fmt.Fprintf(a.stderr, "  %s: %s\n", k, e.Metadata[k])
	}
	return exitError
}

// env returns the environment variable name, or def when it is unset or empty.
func (a *app) env(name, def string) string {
	if v := a.getenv(name); v != "" {
		return v
	}
	return def
}

// --- flags shared by the verbs ---

// rpcOptions are the flags of the verbs that call the RPC endpoint.
type rpcOptions struct {
	url, service, namespace, caller, bearerToken string
	ttl                                          time.Duration
	raw                                          bool
	a                                            *app
}

func (a *app) rpcFlags(fs *flag.FlagSet) *rpcOptions {
	o := &rpcOptions{a: a}
	fs.StringVar(&o.url, "url", a.env("LEASECTL_URL", defaultURL), "the dispatcher's RPC `URL` (env LEASECTL_URL)")
	fs.StringVar(&o.service, "service", a.getenv("LEASECTL_SERVICE"), "the `service` name sent as Rpc-Service; empty sends none (env LEASECTL_SERVICE)")
	fs.StringVar(&o.namespace, "namespace", a.env("LEASECTL_NAMESPACE", defaultNamespace), "the procedure `namespace` (env LEASECTL_NAMESPACE)")
	fs.StringVar(&o.caller, "caller", a.env("LEASECTL_CALLER", defaultCaller), "the `name` sent as Rpc-Caller, also the lease's peer id when none is given (env LEASECTL_CALLER)")
	fs.StringVar(&o.bearerToken, "bearer-token", "", "send \"Authorization: Bearer `token`\" (env LEASECTL_BEARER_TOKEN)")
	fs.DurationVar(&o.ttl, "ttl", 0, "the call's deadline, sent as Context-TTL-MS (default 30s)")
	fs.BoolVar(&o.raw, "raw", false, "print the response JSON compact, as received, instead of indented")
	return o
}

func (o *rpcOptions) token() string {
	if o.bearerToken != "" {
		return o.bearerToken
	}
	return o.a.getenv("LEASECTL_BEARER_TOKEN")
}

// client returns a Client for the flags; opts fills in what the flags do not.
func (o *rpcOptions) client(opts transport.ClientConfig) (*transport.Client, error) {
	opts.Service, opts.Namespace, opts.Caller, opts.BearerToken = o.service, o.namespace, o.caller, o.token()
	if o.ttl < 0 {
		return nil, usagef("--ttl must not be negative, got %v", o.ttl)
	}
	c, err := transport.NewClient(o.url, opts)
	if err != nil {
		return nil, usagef("%s", strings.TrimPrefix(err.Error(), "transport: NewClient: "))
	}
	return c, nil
}

// callContext bounds a call by --ttl.
func (o *rpcOptions) callContext() (context.Context, context.CancelFunc) {
	if o.ttl > 0 {
		return context.WithTimeout(o.a.ctx, o.ttl)
	}
	return context.WithCancel(o.a.ctx)
}

// controlOptions are the flags of the verbs that call the control plane.
type controlOptions struct {
	url, bearerToken string
	ttl              time.Duration
	raw              bool
	a                *app
}

func (a *app) controlFlags(fs *flag.FlagSet) *controlOptions {
	o := &controlOptions{a: a}
	fs.StringVar(&o.url, "control-url", a.env("LEASECTL_CONTROL_URL", defaultControlURL),
		"the control plane's `URL`; without a path, "+control.DefaultPrefix+" is added (env LEASECTL_CONTROL_URL)")
	fs.StringVar(&o.bearerToken, "bearer-token", "", "send \"Authorization: Bearer `token`\" (env LEASECTL_BEARER_TOKEN)")
	fs.DurationVar(&o.ttl, "ttl", 0, "each request's deadline (default 30s)")
	fs.BoolVar(&o.raw, "raw", false, "print JSON compact instead of indented")
	return o
}

func (o *controlOptions) client() (*control.Client, error) {
	tok := o.bearerToken
	if tok == "" {
		tok = o.a.getenv("LEASECTL_BEARER_TOKEN")
	}
	if o.ttl < 0 {
		return nil, usagef("--ttl must not be negative, got %v", o.ttl)
	}
	c, err := control.NewClient(o.url, control.ClientConfig{BearerToken: tok, Timeout: o.ttl})
	if err != nil {
		return nil, usagef("--control-url: %s", strings.TrimPrefix(err.Error(), "transport: NewControlClient: "))
	}
	return c, nil
}

// pairsFlag is a repeatable key=value flag.
type pairsFlag struct{ pairs [][2]string }

func (p *pairsFlag) String() string {
	s := make([]string, len(p.pairs))
	for i, kv := range p.pairs {
		s[i] = kv[0] + "=" + kv[1]
	}
	return strings.Join(s, ",")
}

func (p *pairsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	p.pairs = append(p.pairs, [2]string{strings.TrimSpace(k), val})
	return nil
}

// Map returns the pairs as a map (later keys win), nil when there are none.
func (p *pairsFlag) Map() map[string]string {
	if len(p.pairs) == 0 {
		return nil
	}
	m := make(map[string]string, len(p.pairs))
	for _, kv := range p.pairs {
		m[kv[0]] = kv[1]
	}
	return m
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// noArgs refuses positional arguments.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// --- input ---

// stdinPiped reports whether stdin carries input: a pipe or a file, not a
// terminal or /dev/null. A reader that is not a file (in tests) counts as
// piped.
func stdinPiped(r io.Reader) bool {
	if r == nil {
		return false
	}
	f, ok := r.(*os.File)
	if !ok {
		return true
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice == 0
}

// readValue resolves a value flag: "@file" reads the file, "-" reads stdin,
// anything else is the value itself.
func (a *app) readValue(flagName, v string) ([]byte, error) {
	switch {
	case v == "-":
		if a.stdin == nil {
			return nil, nil
		}
		b, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("reading --%s from stdin: %w", flagName, err)
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		return a.readFile(flagName, v[1:])
	}
	return []byte(v), nil
}

// readFile reads the file named by a flag ("-" is stdin).
func (a *app) readFile(flagName, path string) ([]byte, error) {
	if path == "-" {
		return a.readValue(flagName, "-")
	}
	if path == "" {
		return nil, usagef("--%s needs a file name", flagName)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading --%s: %w", flagName, err)
	}
	return b, nil
}

// --- output ---

// printJSON prints a JSON document, indented unless raw; anything that is
// not JSON is printed as it is.
func (a *app) printJSON(raw bool, data []byte) error {
	data = bytes.TrimSpace(data)
	if !raw && json.Valid(data) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, data, "", "  "); err == nil {
			data = buf.Bytes()
		}
	}
	_, err := fmt.Fprintf(a.stdout, "%s\n", data)
	return err
}

// printValue prints v as JSON, indented unless raw.
func (a *app) printValue(raw bool, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.printJSON(raw, data)
}

// parseIDs parses sequence ids given as separate arguments or comma lists.
func parseIDs(args []string) ([]int64, error) {
	var ids []int64
	for _, arg := range args {
		for s := range strings.SplitSeq(arg, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil || id <= 0 {
				return nil, usagef("%q is not a sequence id (a positive integer)", s)
			}
			ids = append(ids, id)
		}
	}
	return ids, nil
}
