package transport_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// The network fuzz target drives the real handler, over a real in-memory
// dispatcher, through real HTTP (transport.NewServer on a loopback port)
// with programs of random calls: procedures (served, unknown, of another
// namespace), methods, protocol headers (service, encoding, the three
// deadline headers, caller and peer ids, the both-response-error flag),
// bearer tokens of each role, and bodies that are valid requests, valid
// JSON of the wrong shape, or garbage. It asserts, call by call:
//
//   - the server always answers, and never with a 5xx but 504 (a deadline
//     the caller asked for): a client's mistake is a 4xx;
//   - every answer is well formed: a success has Rpc-Status: success and a
//     JSON body; an error has Rpc-Status = Rpc-Error-Code = the body's
//     status, Rpc-Error-Name = the body's code, a message, a metadata object,
//     and the HTTP status of its status (405 for a method not allowed);
//   - authorization follows the roles: a token that holds the procedure's
//     role is never refused, and one that does not always is;
//
// and after the program, with the queue's own stats and the tokens it
// leased:
//
//   - pending + active + dead letters = enqueued − completed − drained −
//     purged + restored, counted from the successful responses;
//   - every token leased either still heartbeats or is unknown_token (or
//     expired), and completing the live ones leaves no active lease.

// netFuzzTokens are the bearer tokens of the fuzzed handler, by role.
var netFuzzTokens = map[transport.Role]string{
	transport.RoleProducer: "p-tok", transport.RoleWorker: "w-tok",
	transport.RoleObserver: "o-tok", transport.RoleAdmin: "a-tok",
}

// netFuzzServer is one loopback server for a whole fuzz run whose handler
// each input replaces, so inputs do not pay for a listener.
type netFuzzServer struct {
	url     string
	client  *http.Client
	handler atomic.Pointer[http.Handler]
}

// newNetFuzzServer serves through transport.NewServer on a loopback port;
// stop closes it.
func newNetFuzzServer(tb testing.TB) (s *netFuzzServer, stop func()) {
	s = &netFuzzServer{}
	srv, err := transport.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.handler.Load()).ServeHTTP(w, r)
	}), transport.ServerConfig{Logger: quietLogger})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler)
	ts.Config = srv
	ts.Start()
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	s.url = ts.URL + "/yarpc/v1"
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	return s, func() {
		tr.CloseIdleConnections()
		ts.Close()
	}
}

// fuzzBytes hands out the input a piece at a time; past its end it gives
// zeros, so every input is a complete program.
type fuzzBytes struct {
	b []byte
}

func (f *fuzzBytes) done() bool { return len(f.b) == 0 }

func (f *fuzzBytes) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

func (f *fuzzBytes) intn(n int) int { return int(f.byte()) % n }

func (f *fuzzBytes) bool() bool { return f.byte()&1 == 1 }

// str is a short string of the input's bytes: printable ASCII (a header
// value, a field), empty when the length byte says so.
func (f *fuzzBytes) str(maxLen int) string {
	n := f.intn(maxLen + 1)
	out := make([]byte, 0, n)
	for range n {
		c := f.byte()
		if c < 0x20 || c > 0x7e {
			c = 'a' + c%26
		}
		out = append(out, c)
	}
	return string(out)
}

// raw is up to maxLen raw bytes of the input.
func (f *fuzzBytes) raw(maxLen int) []byte {
	n := min(f.intn(maxLen+1), len(f.b))
	out := f.b[:n]
	f.b = f.b[n:]
	return out
}

// netFuzzCall is one call of a program.
type netFuzzCall struct {
	method, procedure, verb string
	headers                 http.Header
	body                    []byte
	token                   string // the bearer token sent, "" for none
}

// netFuzzState is what a program learned from its successful responses.
type netFuzzState struct {
	tokens  []json.RawMessage // ownership tokens of the leases granted
	live    int               // pending + active + dead letters, as the responses tell
	unsure  bool              // a counting call ended at its deadline: it may or may not have happened
	seqIDs  []int64
	drained []json.RawMessage // pending items taken by drain, to restore
}

const netFuzzMaxBody = 16 << 10

func (s *netFuzzState) itemJSON(in *fuzzBytes) string {
	fields := []string{}
	add := func(name string) {
		switch in.intn(4) {
		case 0: // absent
		case 1:
			fields = append(fields, fmt.Sprintf("%q:%q", name, in.str(12)))
		default:
			fields = append(fields, fmt.Sprintf("%q:%q", name, "v"+strconv.Itoa(in.intn(4))))
		}
	}
	for _, f := range []string{"resourceType", "resourceId", "partitionKey", "payloadEncoding", "requestId"} {
		add(f)
	}
	if in.bool() {
		fields = append(fields, fmt.Sprintf(`"body":%q`, base64.StdEncoding.EncodeToString(in.raw(32))))
	}
	if in.bool() {
		fields = append(fields, fmt.Sprintf(`"attributes":{%q:%q}`, in.str(8), in.str(8)))
	}
	return "{" + strings.Join(fields, ",") + "}"
}

func (s *netFuzzState) tokenJSON(in *fuzzBytes) string {
	if len(s.tokens) > 0 && in.intn(4) != 0 {
		return string(s.tokens[in.intn(len(s.tokens))])
	}
	switch in.intn(3) {
	case 0:
		return `{"sequenceId":` + strconv.Itoa(in.intn(20)) + `,"attempt":1,"leaseId":"0f8fad5b-d9cb-469f-a165-70867728950e"}`
	case 1:
		return `{}`
	}
	return `"` + in.str(8) + `"`
}

// body builds the request body of a call to verb: a valid request of the
// verb (with the input's values), the wrong shape, or garbage.
func (s *netFuzzState) body(in *fuzzBytes, verb string) []byte {
	switch in.intn(8) {
	case 0:
		return in.raw(64) // garbage
	case 1:
		return nil // empty: {}
	case 2: // valid JSON, wrong types everywhere
		return []byte(`{"payload":"x","waitMs":"soon","ownershipToken":5,"limit":-1,"items":{},"sequenceIds":"all","payloads":7,"maxItems":-3}`)
	case 3:
		return bytes.Repeat([]byte("["), 1+in.intn(200)) // deep or truncated
	}
	switch verb {
	case transport.VerbEnqueue:
		return []byte(`{"payload":` + s.itemJSON(in) + `}`)
	case transport.VerbEnqueueBatch:
		return []byte(`{"payloads":[` + s.itemJSON(in) + `,` + s.itemJSON(in) + `]}`)
	case transport.VerbLease, transport.VerbLeaseBatch:
		return []byte(fmt.Sprintf(`{"peerId":%q,"waitMs":%d,"maxItems":%d}`, in.str(8), in.intn(20)-2, in.intn(4)))
	case transport.VerbHeartbeat, transport.VerbComplete:
		return []byte(`{"ownershipToken":` + s.tokenJSON(in) + `}`)
	case transport.VerbRelease:
		return []byte(fmt.Sprintf(`{"ownershipToken":%s,"delayMs":%d}`, s.tokenJSON(in), in.intn(4)-1))
	case transport.VerbHeartbeatBatch, transport.VerbCompleteBatch:
		toks := []string{}
		for range in.intn(4) {
			toks = append(toks, s.tokenJSON(in))
		}
		return []byte(`{"ownershipTokens":[` + strings.Join(toks, ",") + `]}`)
	case transport.VerbFail:
		return []byte(fmt.Sprintf(`{"ownershipToken":%s,"reason":%q,"errorCode":%q,"requeue":%t}`, s.tokenJSON(in), in.str(8), in.str(8), in.bool()))
	case transport.VerbDrain:
		if in.bool() {
			return []byte(fmt.Sprintf(`{"limit":%d,"maxBytes":%d}`, in.intn(4)-1, in.intn(3)*100))
		}
		return []byte(`{}`)
	case transport.VerbRestore:
		if len(s.drained) > 0 && in.bool() {
			return []byte(`{"items":[` + string(s.drained[in.intn(len(s.drained))]) + `]}`)
		}
		return []byte(fmt.Sprintf(`{"items":[{"payload":%s,"attempt":%d,"sequenceId":%d,"enqueuedAt":"2026-01-02T03:04:05Z"}]}`,
			s.itemJSON(in), in.intn(4), in.intn(10)+1000))
	case transport.VerbDeadLetters:
		return []byte(fmt.Sprintf(`{"limit":%d}`, in.intn(4)-1))
	case transport.VerbRedrive, transport.VerbPurge:
		if in.bool() {
			return []byte(`{"all":true}`)
		}
		ids := []string{}
		for range in.intn(3) {
			if len(s.seqIDs) > 0 && in.bool() {
				ids = append(ids, strconv.FormatInt(s.seqIDs[in.intn(len(s.seqIDs))], 10))
			} else {
				ids = append(ids, strconv.Itoa(in.intn(10)))
			}
		}
		return []byte(`{"sequenceIds":[` + strings.Join(ids, ",") + `]}`)
	}
	return []byte(`{}`)
}

// netFuzzVerbs are the verbs a program calls: the served ones, and two the
// handler does not serve, which must be not-found, never a 500.
var netFuzzVerbs = append(transport.Verbs(), "pause", "nope")

// nextCall decodes one call from the input.
func (s *netFuzzState) nextCall(in *fuzzBytes) netFuzzCall {
	c := netFuzzCall{method: http.MethodPost, headers: http.Header{}}
	c.verb = netFuzzVerbs[in.intn(len(netFuzzVerbs))]
	c.procedure = transport.Procedure("", c.verb)
	switch in.intn(16) {
	case 0:
		c.procedure = "other::" + c.verb
	case 1:
		c.procedure = in.str(12)
	case 2:
		c.method = []string{http.MethodGet, http.MethodPut, http.MethodDelete}[in.intn(3)]
	}
	if c.procedure != "" {
		c.headers.Set(transport.HeaderProcedure, c.procedure)
	}
	flags := in.byte()
	set := func(bit int, name string, value func() string) {
		if flags&(1<<bit) != 0 {
			c.headers.Set(name, value())
		}
	}
	ttl := func() string {
		switch in.intn(6) {
		case 0:
			return in.str(6)
		case 1:
			return "0"
		case 2:
			return "-5"
		case 3:
			return "99999999999999999999999"
		}
		return strconv.Itoa(1 + in.intn(50)*100)
	}
	set(0, transport.HeaderService, func() string { return []string{"svc", "other", in.str(10)}[in.intn(3)] })
	set(1, transport.HeaderEncoding, func() string {
		return []string{"json", "application/json; charset=utf-8", "proto", in.str(6)}[in.intn(4)]
	})
	set(2, transport.HeaderContextTTLMs, ttl)
	set(3, transport.HeaderTTLMs, ttl)
	set(4, transport.HeaderDeadline, func() string {
		if in.bool() {
			return time.Now().Add(time.Duration(in.intn(50)) * 100 * time.Millisecond).Format(time.RFC3339Nano)
		}
		return in.str(10)
	})
	set(5, transport.HeaderCaller, func() string { return strings.Repeat(in.str(8)+"x", 1+in.intn(40)) })
	set(6, transport.HeaderApplicationPeerID, func() string { return in.str(16) })
	set(7, transport.HeaderAcceptsBothResponseError, func() string { return []string{"true", "false", in.str(4)}[in.intn(3)] })
	if in.intn(4) == 0 {
		c.headers.Set(transport.HeaderPeerID, in.str(300))
	}
	roles := transport.Roles()
	switch k := in.intn(len(roles) + 3); {
	case k < len(roles):
		c.token = netFuzzTokens[roles[k]]
	case k == len(roles):
		c.token = in.str(8) // unknown
	}
	if c.token != "" {
		c.headers.Set("Authorization", "Bearer "+c.token)
	} else if in.intn(8) == 0 {
		c.headers.Set("Authorization", "Basic "+in.str(8))
	}
	c.body = s.body(in, c.verb)
	if in.intn(32) == 0 {
		c.body = bytes.Repeat([]byte(" "), netFuzzMaxBody+1) // over the limit
	}
	return c
}

// tokenRole is the role the fuzzed handler's BearerTokens gives token ("" for none).
func tokenRole(token string) transport.Role {
	for r, t := range netFuzzTokens {
		if t == token {
			return r
		}
	}
	return ""
}

// do sends c and checks the answer is well formed; it returns the HTTP
// status and body.
func (s *netFuzzServer) do(t testing.TB, c netFuzzCall) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, s.url, bytes.NewReader(c.body))
	if err != nil {
		t.Fatalf("building the request: %v", err)
	}
	req.Header = c.headers
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: no answer: %v", c.method, c.procedure, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", c.method, c.procedure, err)
	}
	code := res.StatusCode
	where := fmt.Sprintf("%s %s (headers %v, body %.200q) answered %d %s %.300s", c.method, c.procedure, c.headers, c.body, code, res.Header, body)
	if code >= 500 && code != http.StatusGatewayTimeout {
		t.Fatalf("a server error for a client's call: %s", where)
	}
	if code == http.StatusOK {
		if res.Header.Get(transport.HeaderStatus) != transport.StatusSuccess || !json.Valid(body) {
			t.Fatalf("a malformed success: %s", where)
		}
		return code, res.Header, body
	}
	st := resourcelease.Status(res.Header.Get(transport.HeaderStatus))
	var eb struct {
		Message  string          `json:"message"`
		Status   string          `json:"status"`
		Code     string          `json:"code"`
		Metadata json.RawMessage `json:"metadata"`
	}
	switch {
	case !st.Valid() || res.Header.Get(transport.HeaderErrorCode) != string(st):
		t.Fatalf("an error without a valid Rpc-Status and Rpc-Error-Code: %s", where)
	case json.Unmarshal(body, &eb) != nil || eb.Status != string(st) || eb.Code != res.Header.Get(transport.HeaderErrorName) ||
		eb.Code == "" || eb.Message == "" || !bytes.HasPrefix(eb.Metadata, []byte("{")):
		t.Fatalf("an error body that disagrees with its headers: %s", where)
	case code == http.StatusMethodNotAllowed:
		if c.method == http.MethodPost || res.Header.Get("Allow") != http.MethodPost {
			t.Fatalf("405 without Allow: POST, or for a POST: %s", where)
		}
	case code != st.HTTPStatus():
		t.Fatalf("HTTP %d for status %s (want %d): %s", code, st, st.HTTPStatus(), where)
	}
	both := res.Header.Get(transport.HeaderBothResponseError)
	if (both == "true") != (strings.TrimSpace(c.headers.Get(transport.HeaderAcceptsBothResponseError)) == "true") {
		t.Fatalf("Rpc-Both-Response-Error %q answers Rpc-Accepts-Both-Response-Error %q: %s", both,
			c.headers.Get(transport.HeaderAcceptsBothResponseError), where)
	}
	return code, res.Header, body
}

// checkAuthorization: a POST whose token holds its procedure's role is
// never refused; one whose token does not, always is.
func checkAuthorization(t testing.TB, c netFuzzCall, code int, hdr http.Header) {
	t.Helper()
	if c.method != http.MethodPost {
		return
	}
	proc := strings.TrimSpace(c.procedure) // as the server's header parser hands it over
	_, verb, _ := transport.SplitProcedure(proc)
	need := transport.RoleObserver // what a procedure the handler does not serve asks for
	if isServed(verb) && proc == transport.Procedure("", verb) {
		need = transport.RoleOf(verb)
	}
	held := tokenRole(c.token)
	refused := code == http.StatusUnauthorized || code == http.StatusForbidden
	switch {
	case held != "" && held.Allows(need) && refused:
		t.Fatalf("%s with the %s token was refused (%d %s)", c.procedure, held, code, hdr.Get(transport.HeaderErrorMessage))
	case (held == "" || !held.Allows(need)) && !refused:
		t.Fatalf("%s needs %s, and the token %q (%s) got %d", c.procedure, need, c.token, held, code)
	}
}

func isServed(verb string) bool {
	for _, v := range transport.Verbs() {
		if v == verb {
			return true
		}
	}
	return false
}

// learn updates the state from a successful response of c.
func (s *netFuzzState) learn(t testing.TB, c netFuzzCall, body []byte) {
	t.Helper()
	fail := func(err error) { t.Fatalf("%s: cannot decode its success %q: %v", c.procedure, body, err) }
	switch c.verb {
	case transport.VerbEnqueue:
		var r struct {
			SequenceID int64 `json:"sequenceId"`
			Duplicate  bool  `json:"duplicate"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		if !r.Duplicate {
			s.live++
		}
		s.seqIDs = append(s.seqIDs, r.SequenceID)
	case transport.VerbLease:
		var l *struct {
			OwnershipToken json.RawMessage `json:"ownershipToken"`
		}
		if err := json.Unmarshal(body, &l); err != nil {
			fail(err)
		}
		if l != nil {
			s.tokens = append(s.tokens, l.OwnershipToken)
		}
	case transport.VerbEnqueueBatch:
		var r struct {
			Results []struct {
				SequenceID int64           `json:"sequenceId"`
				Duplicate  bool            `json:"duplicate"`
				Error      json.RawMessage `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		for _, it := range r.Results {
			if it.Error == nil && !it.Duplicate {
				s.live++
			}
			if it.Error == nil {
				s.seqIDs = append(s.seqIDs, it.SequenceID)
			}
		}
	case transport.VerbLeaseBatch:
		var r struct {
			Items []struct {
				OwnershipToken json.RawMessage `json:"ownershipToken"`
			} `json:"items"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		for _, l := range r.Items {
			s.tokens = append(s.tokens, l.OwnershipToken)
		}
	case transport.VerbComplete:
		s.live--
	case transport.VerbCompleteBatch:
		var r struct {
			Results []struct {
				Success bool            `json:"success"`
				Error   json.RawMessage `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		for _, it := range r.Results {
			if it.Success {
				s.live--
			}
		}
	case transport.VerbDrain:
		var r struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		s.live -= len(r.Items)
		s.drained = append(s.drained, r.Items...)
	case transport.VerbRestore:
		var r struct {
			RestoredCount int `json:"restoredCount"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		s.live += r.RestoredCount
	case transport.VerbPurge:
		var r struct {
			PurgedCount int `json:"purgedCount"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			fail(err)
		}
		s.live -= r.PurgedCount
	}
}

// counts reports whether verb changes how many items the queue holds.
func counts(verb string) bool {
	switch verb {
	case transport.VerbEnqueue, transport.VerbEnqueueBatch, transport.VerbComplete, transport.VerbCompleteBatch,
		transport.VerbDrain, transport.VerbRestore, transport.VerbPurge:
		return true
	}
	return false
}

// runNetFuzz runs one program against a fresh dispatcher, checks it, and
// returns the HTTP status of each call and what it learned.
func runNetFuzz(t testing.TB, srv *netFuzzServer, program []byte) ([]int, *netFuzzState) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{Capacity: 16})
	defer closeD()
	tokens := map[transport.Role][]string{}
	for r, tok := range netFuzzTokens {
		tokens[r] = []string{tok}
	}
	h, err := transport.NewHandler(d, transport.HandlerConfig{
		Service: "svc", MaxBodyBytes: netFuzzMaxBody, MaxWait: 5 * time.Millisecond, MaxTTL: 2 * time.Second,
		Logger: quietLogger, Authorize: transport.BearerTokens(tokens),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.handler.Store(&h)

	in := &fuzzBytes{b: program}
	st := &netFuzzState{}
	var codes []int
	for n := 0; n < 40 && !in.done(); n++ {
		c := st.nextCall(in)
		code, hdr, body := srv.do(t, c)
		codes = append(codes, code)
		checkAuthorization(t, c, code, hdr)
		switch {
		case code == http.StatusOK && c.method == http.MethodPost:
			st.learn(t, c, body)
		case code == http.StatusGatewayTimeout && counts(c.verb):
			st.unsure = true
		}
	}

	// The invariants, asked with the admin token.
	admin := func(verb, body string) (int, []byte) {
		c := netFuzzCall{method: http.MethodPost, procedure: transport.Procedure("", verb), verb: verb, body: []byte(body),
			headers: http.Header{transport.HeaderProcedure: {transport.Procedure("", verb)}, "Authorization": {"Bearer a-tok"}}}
		code, _, out := srv.do(t, c)
		return code, out
	}
	stats := func() resourcelease.Stats {
		code, out := admin(transport.VerbStats, `{}`)
		var s resourcelease.Stats
		if code != http.StatusOK || json.Unmarshal(out, &s) != nil {
			t.Fatalf("stats: %d %s", code, out)
		}
		if s.PendingCount < 0 || s.ActiveLeaseCount < 0 || s.DeadLetterCount < 0 {
			t.Fatalf("negative counts: %+v", s)
		}
		return s
	}
	s := stats()
	if total := s.PendingCount + s.ActiveLeaseCount + s.DeadLetterCount; !st.unsure && total != st.live {
		t.Fatalf("the queue holds %d items (%+v); the responses add up to %d", total, s, st.live)
	}
	for _, tok := range st.tokens {
		code, out := admin(transport.VerbHeartbeat, `{"ownershipToken":`+string(tok)+`}`)
		switch code {
		case http.StatusOK:
			if code, out := admin(transport.VerbComplete, `{"ownershipToken":`+string(tok)+`}`); code != http.StatusOK {
				t.Fatalf("a token that heartbeats cannot complete: %d %s", code, out)
			}
		case http.StatusNotFound:
			var eb struct{ Code string }
			_ = json.Unmarshal(out, &eb)
			if eb.Code != resourcelease.CodeUnknownToken && eb.Code != resourcelease.CodeLeaseExpired {
				t.Fatalf("a leased token is neither live nor unknown: %s", out)
			}
		default:
			t.Fatalf("heartbeat of a leased token: %d %s", code, out)
		}
	}
	if s := stats(); s.ActiveLeaseCount != 0 {
		t.Fatalf("%d active leases left once every live token completed (%+v)", s.ActiveLeaseCount, s)
	}
	return codes, st
}

// Hand-assembled calls in the byte layout nextCall decodes: verb, twist (3:
// none), header flags (0: none), x-peer-id (1: none), token (an index into
// Roles(): 1 producer, 2 worker, 3 admin), body mode (4: the verb's valid
// request), the body's bytes, and the over-the-limit byte (1: no).
func netFuzzCallBytes(verb string, role byte, body ...byte) []byte {
	for i, v := range netFuzzVerbs {
		if v == verb {
			return append(append([]byte{byte(i), 3, 0, 1, role, 4}, body...), 1)
		}
	}
	panic(verb)
}

// netFuzzCycle enqueues an item as a producer, leases, heartbeats and
// completes it as a worker, and reads the stats.
var netFuzzCycle = bytes.Join([][]byte{
	netFuzzCallBytes("enqueue", 1, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 0, 0), // every field "v0", no body, no attributes
	netFuzzCallBytes("lease", 2, 2, 'w', '1', 7, 1),                    // peerId "w1", waitMs 5, maxItems 1
	netFuzzCallBytes("heartbeat", 2, 1, 0),                             // the first token leased
	netFuzzCallBytes("complete", 2, 1, 0),
	netFuzzCallBytes("stats", 1),
}, nil)

// TestHandlerOverHTTPCycle checks the fuzz harness itself: the seed cycle
// decodes to the calls it means, all succeed, and the model follows.
func TestHandlerOverHTTPCycle(t *testing.T) {
	s, stop := newNetFuzzServer(t)
	defer stop()

	codes, st := runNetFuzz(t, s, netFuzzCycle)
	if fmt.Sprint(codes) != "[200 200 200 200 200]" || len(st.tokens) != 1 || st.live != 0 || st.unsure {
		t.Fatalf("the cycle answered %v; learned %d tokens, %d live items (unsure %t)", codes, len(st.tokens), st.live, st.unsure)
	}
	// The same calls with each other's tokens are refused, and the checks
	// still hold.
	wrong := bytes.Clone(netFuzzCycle)
	wrong[4] = 2 // enqueue as a worker
	codes, _ = runNetFuzz(t, s, wrong)
	if codes[0] != http.StatusForbidden {
		t.Fatalf("enqueue with the worker's token: %d", codes[0])
	}
}

// FuzzHandlerOverHTTP is the network fuzz target (see the comment at the
// top of this file). Seeds: a normal cycle, every verb with a valid body,
// and a few hostile calls.
func FuzzHandlerOverHTTP(f *testing.F) {
	f.Add(netFuzzCycle)
	for _, v := range netFuzzVerbs {
		f.Add(netFuzzCallBytes(v, 3, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 1, 0, 1))
		f.Add(append([]byte{0, 0, 0}, netFuzzCallBytes(v, 0, 'x', '{')...))
	}
	verb := func(v string) byte { return netFuzzCallBytes(v, 0)[0] }
	f.Add([]byte{verb("lease"), 2, 0xff, 3, 'a', 'b', 'c', 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add([]byte{verb("drain"), 0, 0xff, 0, 4, 2})
	srv, stop := newNetFuzzServer(f)
	f.Cleanup(stop)
	f.Fuzz(func(t *testing.T, program []byte) {
		runNetFuzz(t, srv, program)
	})
}
