package config

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/leasemesh/leasemesh/transport"
)

// Layer names, as they appear in errors and in Config.Sources.
const (
	SourceDefault = "default"
	SourceFile    = FileName
	SourceCLI     = "command line"
	// SourceDerived marks an rpcClientUrl derived from rpcUrl.
	SourceDerived = "derived from rpcUrl"
)

// Input is what Load reads: the command line (without the program name), the
// environment (os.Environ form) and the directory holding appsettings.json.
type Input struct {
	Args []string
	Env  []string
	Dir  string
	// Help receives the usage when the command line asks for it (-h, --help).
	Help io.Writer
}

// value is one raw setting and the layer it came from.
type value struct {
	raw, source string
}

// layer collects the settings of one source. Indexed list elements
// (roles:0, roles:1) are gathered separately and override a plain value of
// the same key in the same layer.
type layer struct {
	source  string
	plain   map[*keyDef]value
	indexed map[*keyDef]map[int]value
}

func newLayer(source string) *layer {
	return &layer{source: source, plain: map[*keyDef]value{}, indexed: map[*keyDef]map[int]value{}}
}

// set records path=raw, where path is a configuration path such as
// "meshDemo:roles", "meshDemo:roles:1" or "urls" (case-insensitive).
func (l *layer) set(path, raw, source string) error {
	segs := strings.Split(path, ":")
	idx := -1
	if n := len(segs); n > 1 {
		if i, err := strconv.Atoi(segs[n-1]); err == nil && i >= 0 {
			idx, segs = i, segs[:n-1]
		}
	}
	var k *keyDef
	switch {
	case len(segs) == 2 && strings.EqualFold(segs[0], Section):
		k = lookupKey(segs[1], false)
	case len(segs) == 1:
		k = lookupKey(segs[0], true)
	}
	if k == nil {
		return &ConfigValidationError{Field: path, Err: fmt.Errorf("unknown key (from %s); run with -h for the list", source)}
	}
	if idx >= 0 {
		if !k.list {
			return &ConfigValidationError{Field: fieldName(k), Err: fmt.Errorf("is not a list but %q is indexed (from %s)", path, source)}
		}
		if l.indexed[k] == nil {
			l.indexed[k] = map[int]value{}
		}
		l.indexed[k][idx] = value{raw, source}
		return nil
	}
	l.plain[k] = value{raw, source}
	return nil
}

// resolved returns the layer's settings with indexed lists joined as JSON arrays.
func (l *layer) resolved() map[*keyDef]value {
	out := maps.Clone(l.plain)
	for k, elems := range l.indexed {
		idxs := slices.Sorted(maps.Keys(elems))
		arr := make([]string, len(idxs))
		src := ""
		for i, ix := range idxs {
			arr[i] = elems[ix].raw
			src = elems[ix].source
		}
		b, _ := json.Marshal(arr)
		out[k] = value{string(b), src}
	}
	return out
}

// Load resolves the configuration from its layers and validates it.
// A mistake is returned as a *ConfigValidationError; a help request as ErrHelp.
func Load(in Input) (*Config, error) {
	merged := map[*keyDef]value{}
	for _, k := range keys {
		if k.def != "" {
			merged[k] = value{k.def, SourceDefault}
		}
	}
	fileLayer, err := readFile(in.Dir)
	if err != nil {
		return nil, err
	}
	envLayer, err := readEnv(in.Env)
	if err != nil {
		return nil, err
	}
	cliLayer, err := readArgs(in.Args, in.Help)
	if err != nil {
		return nil, err
	}
	for _, l := range []*layer{fileLayer, envLayer, cliLayer} {
		maps.Copy(merged, l.resolved())
	}

	c := &Config{Sources: map[string]string{}}
	for _, k := range keys {
		v, ok := merged[k]
		if !ok {
			continue
		}
		c.Sources[k.name] = v.source
		if err := k.apply(c, v.raw); err != nil {
			shown := v.raw
			if k.name == "postgresUrl" {
				shown = redactURL(shown)
			}
			return nil, &ConfigValidationError{Field: fieldName(k), Err: fmt.Errorf("invalid value %q (from %s): %w", shown, v.source, err)}
		}
	}
	return c, c.derive(merged)
}

// derive fills the defaults that depend on other keys and checks the rules
// that span keys.
func (c *Config) derive(merged map[*keyDef]value) error {
	rolesSrc := merged[lookupKey("roles", false)]
	if c.Has(RoleDiagnostics) && !c.Has(RoleDispatcher) {
		return &ConfigValidationError{Field: Section + ":roles", Err: fmt.Errorf("invalid value %q (from %s): the diagnostics role requires the dispatcher role", rolesSrc.raw, rolesSrc.source)}
	}
	if c.Storage == StoragePostgres && c.PostgresURL == "" {
		v := merged[lookupKey("storage", false)]
		return &ConfigValidationError{Field: Section + ":storage", Err: fmt.Errorf("invalid value %q (from %s): postgres needs %s:postgresUrl", v.raw, v.source, Section)}
	}
	if c.RPCClientURL == "" {
		u, _ := url.Parse(c.RPC.URL)
		c.RPCClientURL = clientURLFrom(u)
		c.RPCClientURLs = []string{c.RPCClientURL}
		c.Sources["rpcClientUrl"] = SourceDerived
	}
	if len(c.URLs) == 0 {
		def := DefaultSideURL
		if c.Has(RoleDiagnostics) {
			def = DefaultURLs
		}
		if err := applyURLs(c, def); err != nil {
			return err
		}
		c.Sources["urls"] = SourceDefault
	}
	if _, set := merged[lookupKey("lowWatermark", false)]; !set {
		c.LowWatermark = c.HighWatermark / 4
		c.Sources["lowWatermark"] = "derived from highWatermark"
	}
	// Backpressure turns on when pending reaches highWatermark; a bounded
	// queue that is full below it never gets there.
	if c.Capacity >= 0 && c.Capacity < c.HighWatermark {
		v, hv := merged[lookupKey("capacity", false)], merged[lookupKey("highWatermark", false)]
		return &ConfigValidationError{Field: Section + ":capacity", Err: fmt.Errorf("invalid value %q (from %s): must be at least highWatermark (%d, from %s), or backpressure can never turn on", v.raw, v.source, c.HighWatermark, hv.source)}
	}
	if c.LowWatermark >= c.HighWatermark {
		v := merged[lookupKey("lowWatermark", false)]
		return &ConfigValidationError{Field: Section + ":lowWatermark", Err: fmt.Errorf("invalid value %q (from %s): must be below highWatermark (%d)", v.raw, v.source, c.HighWatermark)}
	}
	return c.checkSecurity(merged)
}

// checkSecurity checks the tokens and the TLS settings against each other
// and the listeners, and reads the TLS files, so that a mistake is a
// one-line error at start rather than a failed handshake later.
func (c *Config) checkSecurity(merged map[*keyDef]value) error {
	bad := func(key string, topLevel bool, format string, args ...any) error {
		k := lookupKey(key, topLevel)
		v := merged[k]
		return &ConfigValidationError{Field: fieldName(k), Err: fmt.Errorf("invalid value %q (from %s): "+format, append([]any{v.raw, v.source}, args...)...)}
	}
	set := func(key string) bool { _, ok := merged[lookupKey(key, false)]; return ok }

	adminKey := "adminToken"
	if set("controlToken") {
		if set("adminToken") && strings.TrimSpace(merged[lookupKey("adminToken", false)].raw) != strings.TrimSpace(merged[lookupKey("controlToken", false)].raw) {
			return bad("controlToken", false, "differs from adminToken (from %s): controlToken is its older name, set one of them", merged[lookupKey("adminToken", false)].source)
		}
		if !set("adminToken") {
			adminKey = "controlToken"
		}
	}
	tokens := []struct{ key, v string }{{"producerToken", c.ProducerToken}, {"workerToken", c.WorkerToken}, {adminKey, c.ControlToken}}
	for i, a := range tokens {
		for _, b := range tokens[i+1:] {
			if a.v != "" && a.v == b.v {
				return bad(b.key, false, "is also %s: one token would hold both roles", a.key)
			}
		}
	}

	if c.TLSCertFile == "" && c.TLSKeyFile != "" {
		return bad("tlsKeyFile", false, "needs %s:tlsCertFile too", Section)
	}
	if c.TLSCertFile != "" && c.TLSKeyFile == "" {
		return bad("tlsCertFile", false, "needs %s:tlsKeyFile too", Section)
	}
	if c.TLSCertFile == "" {
		if c.Has(RoleDispatcher) && c.RPC.TLS {
			return bad("rpcUrl", false, "https needs %s:tlsCertFile and %s:tlsKeyFile", Section, Section)
		}
		for _, l := range c.URLs {
			if l.TLS {
				return bad("urls", true, "https needs %s:tlsCertFile and %s:tlsKeyFile", Section, Section)
			}
		}
	}
	if c.TLSClientCAFile != "" && !(c.Has(RoleDispatcher) && c.RPC.TLS) {
		return bad("tlsClientCaFile", false, "needs a dispatcher with an https rpcUrl (mutual TLS guards the RPC listener)")
	}
	if c.TLSCertFile != "" {
		if _, err := (transport.TLSConfig{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile}).ServerTLS(); err != nil {
			return bad("tlsCertFile", false, "%v", err)
		}
	}
	if c.TLSCAFile != "" {
		if _, err := (transport.TLSConfig{CAFile: c.TLSCAFile}).ClientTLS(); err != nil {
			return bad("tlsCaFile", false, "%v", err)
		}
	}
	if c.TLSClientCAFile != "" {
		if _, err := (transport.TLSConfig{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, ClientCAFile: c.TLSClientCAFile}).ServerTLS(); err != nil {
			return bad("tlsClientCaFile", false, "%v", err)
		}
	}
	return nil
}

// ServerTLS is the TLS configuration of the https listeners: the RPC
// listener (rpc true) also requires client certificates when
// tlsClientCaFile is set. nil when tlsCertFile is unset.
func (c *Config) ServerTLS(rpc bool) (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	tc := transport.TLSConfig{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile}
	if rpc {
		tc.ClientCAFile = c.TLSClientCAFile
	}
	return tc.ServerTLS()
}

// ClientTLS is the TLS configuration of the RPC clients (seeder, workers,
// /demo/enqueue): the dispatcher verified against tlsCaFile (or the
// system's roots), tlsCertFile presented when it asks for a client
// certificate. nil when rpcClientUrl is not https.
func (c *Config) ClientTLS() (*tls.Config, error) {
	if !strings.HasPrefix(c.RPCClientURL, "https://") {
		return nil, nil
	}
	return transport.TLSConfig{CAFile: c.TLSCAFile, CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile}.ClientTLS()
}

// readFile reads the meshDemo section (and a top-level urls) of
// appsettings.json in dir. A missing file is not an error.
func readFile(dir string) (*layer, error) {
	l := newLayer(SourceFile)
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, &ConfigValidationError{Field: FileName, Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		return nil, &ConfigValidationError{Field: FileName, Err: fmt.Errorf("not valid JSON: %w", err)}
	}
	for top, v := range root {
		switch {
		case strings.EqualFold(top, Section):
			sec, ok := v.(map[string]any)
			if !ok {
				return nil, &ConfigValidationError{Field: Section, Err: fmt.Errorf("must be a JSON object (in %s)", FileName)}
			}
			for _, name := range slices.Sorted(maps.Keys(sec)) {
				if err := setJSON(l, Section+":"+name, sec[name]); err != nil {
					return nil, err
				}
			}
		case strings.EqualFold(top, "urls"):
			if err := setJSON(l, "urls", v); err != nil {
				return nil, err
			}
		}
		// Other sections (Logging, AllowedHosts, ...) belong to other tools.
	}
	return l, nil
}

// setJSON records a JSON value: strings, numbers and booleans as their text,
// arrays as JSON arrays (lists), null as unset.
func setJSON(l *layer, path string, v any) error {
	var raw string
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		raw = x
	case json.Number:
		raw = x.String()
	case bool:
		raw = strconv.FormatBool(x)
	case []any:
		strs := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return &ConfigValidationError{Field: path, Err: fmt.Errorf("array elements must be strings (in %s)", FileName)}
			}
			strs = append(strs, s)
		}
		b, _ := json.Marshal(strs)
		raw = string(b)
	default:
		return &ConfigValidationError{Field: path, Err: fmt.Errorf("must be a string, number, boolean or array (in %s)", FileName)}
	}
	return l.set(path, raw, SourceFile)
}

// readEnv reads MESHDEMO_meshDemo__<key> (and MESHDEMO_urls); "__" separates
// path segments as in .NET. Any other MESHDEMO_ variable is an unknown key.
func readEnv(env []string) (*layer, error) {
	l := newLayer("env")
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || len(name) <= len(EnvPrefix) || !strings.EqualFold(name[:len(EnvPrefix)], EnvPrefix) {
			continue
		}
		path := strings.ReplaceAll(name[len(EnvPrefix):], "__", ":")
		if err := l.set(path, val, "env "+name); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// readArgs reads the command line: --meshDemo:key=value, --meshDemo:key value,
// --urls=value, meshDemo:key=value, and Go-style -flag value / -flag=value /
// --flag=value. A bare "--" is skipped (go run passes it through).
func readArgs(args []string, help io.Writer) (*layer, error) {
	l := newLayer(SourceCLI)
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			continue
		}
		name := strings.TrimLeft(arg, "-")
		dashed := len(name) < len(arg)
		if dashed && (name == "h" || name == "help" || name == "?") {
			writeUsage(help)
			return nil, ErrHelp
		}
		name, val, hasVal := strings.Cut(name, "=")
		if !dashed && !hasVal {
			return nil, &ConfigValidationError{Field: arg, Err: errors.New("unexpected argument (want --meshDemo:<key>=<value> or -<flag> <value>)")}
		}
		if name == "" {
			return nil, &ConfigValidationError{Field: arg, Err: errors.New("not a setting")}
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, &ConfigValidationError{Field: arg, Err: errors.New("needs a value")}
			}
			i++
			val = args[i]
		}
		path := name
		if !strings.Contains(name, ":") {
			k := lookupFlag(name)
			if k == nil {
				return nil, &ConfigValidationError{Field: arg, Err: errors.New("unknown flag; run with -h for the list")}
			}
			path = fieldName(k)
		}
		if err := l.set(path, val, SourceCLI); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// writeUsage prints every key with its flags and default.
func writeUsage(w io.Writer) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, `Usage: meshdemo [settings]

Settings, later layers winning: defaults, %s (section %q), environment
%s%s__<key>, then the command line as --%s:<key>=<value> (or
--%s:<key> <value>) or as the Go-style flag shown. Durations are seconds.

`, FileName, Section, EnvPrefix, Section, Section, Section)
	for _, k := range keys {
		help := k.help
		if k.def != "" {
			help += " (default " + k.def + ")"
		}
		flags := "-" + strings.Join(k.flags, ", -")
		fmt.Fprintf(w, "  %-32s %s\n      %s\n", fieldName(k), flags, help)
	}
}

// redactURL hides the password of a URL that may carry one; what cannot
// be parsed is hidden whole.
func redactURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "(not shown: it may hold a password)"
	}
	return u.Redacted()
}
