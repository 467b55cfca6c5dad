package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// consoleState is what the console test reads from the page.
type consoleState struct {
	Rows        []consoleRow `json:"rows"`
	Loads       int          `json:"loads"`
	Msg         string       `json:"msg"`
	MsgKind     string       `json:"msgKind"`
	DetailSeq   string       `json:"detailSeq"`
	DetailState string       `json:"detailState"`
	BodyKind    string       `json:"bodyKind"`
	BodyText    string       `json:"bodyText"`
	Events      []string     `json:"events"`
	DialogOpen  bool         `json:"dialogOpen"`
	Leasing     string       `json:"leasing"`
	Injected    int          `json:"injected"`
	XSS         bool         `json:"xss"`
	Overflow    bool         `json:"overflow"`
}

type consoleRow struct {
	Seq   int64  `json:"seq"`
	ID    string `json:"id"`
	State string `json:"state"`
	Text  string `json:"text"`
}

const readConsole = `(() => {
  const q = (s) => [...document.querySelectorAll(s)];
  const $ = (id) => document.getElementById(id);
  const body = $("detail-body");
  return {
    rows: q("#items-body tr[data-seq]").map(r => ({seq: +r.dataset.seq, id: r.dataset.resourceId, state: r.dataset.state, text: r.textContent})),
    loads: +(document.body.dataset.itemLoads || 0),
    msg: ($("console-msg-text") || {}).textContent || "",
    msgKind: $("console-msg").dataset.kind || "",
    detailSeq: $("detail").dataset.seq || "",
    detailState: $("detail").dataset.state || "",
    bodyKind: body ? body.dataset.kind : "",
    bodyText: body ? body.textContent : "",
    events: q("#detail-events tr[data-type]").map(r => r.dataset.type),
    dialogOpen: $("token-dialog").open,
    leasing: $("leasing").dataset.state || "",
    injected: q("#detail img, #detail script, #items-body img").length,
    xss: !!window.__xss,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  };
})()`

// consoleToken is the control token the console test's demo runs with.
const consoleToken = "console-secret-token"

// TestBrowserConsole drives the operator console of a running demo in
// headless Chromium: an operator filters the lists, opens items (a body
// with HTML in it is shown as text, a binary one as a hex dump), tries to
// redrive a dead letter with a wrong token and sees the refusal, redrives it
// with the right one, purges another, pauses and resumes leasing, drains to
// a downloaded file and restores from it. Every action is checked through
// the control plane and the RPC API. Screenshots are kept as artifacts.
func TestBrowserConsole(t *testing.T) {
	chromium := needTool(t, "chromium")
	// No seeder and no workers: the test makes every item itself, so the
	// lists hold exactly what it expects.
	demo := startProc(t, "demo", t.TempDir(), "--",
		"--meshDemo:roles=dispatcher,diagnostics", "--meshDemo:storage=memory",
		"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0",
		"--meshDemo:controlToken="+consoleToken, "--meshDemo:maxDeliveryAttempts=1",
		"--meshDemo:leaseDurationSeconds=600")
	base := strings.TrimSuffix(demo.bannerURL(t, "Diagnostics UI"), "/")
	rpcURL := demo.bannerURL(t, "RPC endpoint")
	ctx := ctxFor(t, 150*time.Second)

	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	rpc, err := transport.NewClient(rpcURL, transport.ClientConfig{Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh",
		Caller: "console-test-worker", HTTPClient: noKeepAlive})
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	api, err := control.NewClient(base, control.ClientConfig{HTTPClient: noKeepAlive}) // reads need no token
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	// Seven items: 1-3 dead-lettered, 4 leased, 5-7 pending. Item 3's body
	// carries HTML that must stay text; item 7's is binary.
	bodies := map[string][]byte{
		"order-3": []byte(`{"note":"<img src=x onerror=\"window.__xss=1\"><script>window.__xss=1</script>"}`),
		"blob-7": func() []byte {
			b := make([]byte, 300)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}(),
	}
	seqOf := map[string]int64{}
	for i, id := range []string{"order-1", "order-2", "order-3", "order-4", "order-5", "order-6", "blob-7"} {
		it := &resourcelease.Item{ResourceType: "demo.order", ResourceID: id, PartitionKey: []string{"tenant-1", "tenant-2"}[i%2],
			PayloadEncoding: "application/json", Body: []byte(`{"orderId":"` + id + `"}`), Attributes: map[string]string{"priority": "normal"}}
		if b, ok := bodies[id]; ok {
			it.Body = b
		}
		if id == "blob-7" {
			it.ResourceType, it.PartitionKey, it.PayloadEncoding = "demo.blob", "tenant-3", "application/octet-stream"
		}
		resp, err := rpc.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: it})
		if err != nil {
			t.Fatalf("enqueue %s: %v", id, err)
		}
		seqOf[id] = resp.SequenceID
	}
	for _, reason := range []string{"bad address", "card declined", "poison payload"} {
		l, err := rpc.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "console-test-worker"})
		if err != nil || l == nil {
			t.Fatalf("lease: %v %v", l, err)
		}
		if err := rpc.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: reason, ErrorCode: "demo.rejected", DeadLetter: true}); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := rpc.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "console-test-worker"}); err != nil || l == nil || l.SequenceID != seqOf["order-4"] {
		t.Fatalf("lease of order-4: %+v %v", l, err)
	}

	page := newBrowserPage(t, chromium, 120*time.Second)
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(page, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	click := func(sel string) { t.Helper(); step("click "+sel, chromedp.Click(chromedp.CSS(sel))) }
	typeIn := func(sel, text string) {
		t.Helper()
		clear, _ := json.Marshal(sel)
		step("type into "+sel, chromedp.Evaluate[chromedp.Void](`document.querySelector(`+string(clear)+`).value = ""`),
			chromedp.SendKeys(chromedp.CSS(sel), text))
	}
	var st consoleState
	waitPage := func(what string, cond func(s consoleState) bool) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() bool {
			s, err := chromedp.Run(page, chromedp.Evaluate[consoleState](readConsole))
			if err != nil {
				return false
			}
			st = s
			return cond(s)
		})
	}
	rowSeqs := func(s consoleState) []int64 {
		out := []int64{}
		for _, r := range s.Rows {
			out = append(out, r.Seq)
		}
		return out
	}
	shows := func(want ...int64) func(consoleState) bool {
		return func(s consoleState) bool { return slices.Equal(rowSeqs(s), want) }
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(page, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(artifactsDir(t), name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
	}
	itemState := func(seq int64) resourcelease.ItemState {
		t.Helper()
		d, err := api.Item(ctx, seq)
		if errors.Is(err, resourcelease.ErrItemNotFound) {
			return "gone"
		}
		if err != nil {
			t.Fatalf("item %d: %v", seq, err)
		}
		return d.Item.State
	}

	if err := chromedp.Do(page, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	waitPage("the pending items", shows(seqOf["order-5"], seqOf["order-6"], seqOf["blob-7"]))
	shot("console-pending.png")

	// Filter the pending list by partition, then clear the filter.
	typeIn("#f-partitionKey", "tenant-2")
	click("#f-apply")
	waitPage("the tenant-2 filter", shows(seqOf["order-6"]))
	click("#f-clear")
	waitPage("the cleared filter", shows(seqOf["order-5"], seqOf["order-6"], seqOf["blob-7"]))

	// The binary body is a hex dump.
	click(`#items-body tr[data-seq="` + itoa(seqOf["blob-7"]) + `"] button[data-open]`)
	waitPage("blob-7's detail", func(s consoleState) bool { return s.DetailSeq == itoa(seqOf["blob-7"]) && s.BodyKind != "" })
	if st.BodyKind != "hex" || !strings.HasPrefix(st.BodyText, "00000000  00 01 02 03") {
		t.Errorf("a binary body is shown as a hex dump; got %s %q", st.BodyKind, tail(st.BodyText, 120))
	}

	click(`.tab[data-state="leased"]`)
	waitPage("the leased item", shows(seqOf["order-4"]))
	if !strings.Contains(st.Rows[0].Text, "console-test-worker") {
		t.Errorf("the leased row names its owner: %q", st.Rows[0].Text)
	}

	click(`.tab[data-state="dead"]`)
	waitPage("the dead letters", shows(seqOf["order-1"], seqOf["order-2"], seqOf["order-3"]))
	typeIn("#f-resourceId", "order-3")
	click("#f-apply")
	waitPage("the resourceId filter", shows(seqOf["order-3"]))

	// Open the dead letter whose body holds HTML: it is shown, as text.
	click(`#items-body tr[data-seq="` + itoa(seqOf["order-3"]) + `"] button[data-open]`)
	waitPage("order-3's detail", func(s consoleState) bool { return s.DetailSeq == itoa(seqOf["order-3"]) && len(s.Events) > 0 })
	if st.DetailState != "dead" || st.BodyKind != "json" || !strings.Contains(st.BodyText, `<img src=x onerror=`) {
		t.Errorf("detail of order-3: state %q, body %s %q", st.DetailState, st.BodyKind, st.BodyText)
	}
	if st.Injected != 0 || st.XSS {
		t.Errorf("the body's HTML became elements (%d) or ran (%v)", st.Injected, st.XSS)
	}
	if want := []string{"DeadLettered", "Failed", "LeaseGranted", "Enqueue"}; !slices.Equal(st.Events, want) {
		t.Errorf("order-3's events: got %v, want %v", st.Events, want)
	}
	shot("console-detail.png")
	click("#f-clear")
	waitPage("all dead letters again", shows(seqOf["order-1"], seqOf["order-2"], seqOf["order-3"]))

	// Redrive order-1 with a wrong token: asked for the token once, refused
	// with the server's message, and nothing changed.
	click(`#items-body input.sel[data-seq="` + itoa(seqOf["order-1"]) + `"]`)
	click("#redrive-selected")
	waitPage("the token dialog", func(s consoleState) bool { return s.DialogOpen })
	typeIn("#token-input", "not-the-token")
	click("#token-save")
	waitPage("the refusal", func(s consoleState) bool { return s.MsgKind == "error" })
	if !strings.Contains(st.Msg, "unauthenticated") || !strings.Contains(st.Msg, "the bearer token is not valid") {
		t.Errorf("the refusal shows the server's message; got %q", st.Msg)
	}
	if s := itemState(seqOf["order-1"]); s != resourcelease.ItemDead {
		t.Fatalf("a refused redrive changed order-1 to %s", s)
	}
	shot("console-refused.png")

	// The right token: order-1 is pending again.
	click("#msg-token")
	waitPage("the token dialog again", func(s consoleState) bool { return s.DialogOpen })
	typeIn("#token-input", consoleToken)
	click("#token-save")
	waitPage("the dialog to close", func(s consoleState) bool { return !s.DialogOpen })
	click("#redrive-selected")
	waitPage("the redrive", func(s consoleState) bool {
		return s.MsgKind == "ok" && strings.Contains(s.Msg, "Redrove 1 dead letter")
	})
	if s := itemState(seqOf["order-1"]); s != resourcelease.ItemPending {
		t.Errorf("after the redrive order-1 is %s, want pending", s)
	}
	waitPage("the dead list without order-1", shows(seqOf["order-2"], seqOf["order-3"]))

	// Purge order-2 from its detail view, confirming first.
	click(`#items-body tr[data-seq="` + itoa(seqOf["order-2"]) + `"] button[data-open]`)
	waitPage("order-2's detail", func(s consoleState) bool { return s.DetailSeq == itoa(seqOf["order-2"]) && s.DetailState == "dead" })
	click("#detail-purge")
	click("#confirm-yes")
	waitPage("the purge", func(s consoleState) bool { return s.MsgKind == "ok" && strings.Contains(s.Msg, "Purged 1 dead letter") })
	if s := itemState(seqOf["order-2"]); s != "gone" {
		t.Errorf("after the purge order-2 is %s, want gone", s)
	}
	waitPage("the purged item's detail", func(s consoleState) bool { return s.DetailState == "gone" })
	waitPage("the dead list with order-3 alone", shows(seqOf["order-3"]))
	stats, err := api.Stats(ctx)
	if err != nil || stats.DeadLetterCount != 1 {
		t.Fatalf("dead letters after redrive and purge: %+v %v", stats, err)
	}

	// Pause: the dispatcher grants nothing; resume: it does again.
	click("#pause-btn")
	waitPage("the pause", func(s consoleState) bool { return s.MsgKind == "ok" && s.Leasing == "paused" })
	if stats, err := api.Stats(ctx); err != nil || !stats.Paused {
		t.Fatalf("stats after pause: %+v %v", stats, err)
	}
	if l, err := rpc.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "console-test-worker"}); err != nil || l != nil {
		t.Fatalf("a lease while paused: %+v %v", l, err)
	}
	shot("console-paused.png")
	click("#resume-btn")
	waitPage("the resume", func(s consoleState) bool { return s.MsgKind == "ok" && s.Leasing == "running" })
	if stats, err := api.Stats(ctx); err != nil || stats.Paused {
		t.Fatalf("stats after resume: %+v %v", stats, err)
	}

	// Drain into a downloaded file, then restore from it.
	downloads := t.TempDir()
	step("allow downloads", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
		return err
	}))
	before, err := api.Stats(ctx)
	if err != nil || before.PendingCount == 0 {
		t.Fatalf("pending before the drain: %+v %v", before, err)
	}
	click("#drain-btn")
	click("#confirm-yes")
	waitPage("the drain", func(s consoleState) bool { return s.MsgKind == "ok" && strings.Contains(s.Msg, "Drained") })
	var file string
	eventually(t, 15*time.Second, "the drained file", func() bool {
		m, _ := filepath.Glob(filepath.Join(downloads, "leasemesh-drain-*.json"))
		if len(m) == 1 {
			file = m[0]
		}
		return file != ""
	})
	var drained resourcelease.DrainResponse
	eventually(t, 5*time.Second, "the drained file to be complete", func() bool {
		data, err := os.ReadFile(file)
		return err == nil && json.Unmarshal(data, &drained) == nil
	})
	if len(drained.Items) != before.PendingCount {
		t.Errorf("the file holds %d items, want the %d that were pending", len(drained.Items), before.PendingCount)
	}
	if after, err := api.Stats(ctx); err != nil || after.PendingCount != 0 {
		t.Errorf("pending after the drain: %+v %v", after, err)
	}
	step("upload the drained file", chromedp.SetUploadFiles(chromedp.CSS("#restore-file"), []string{file}))
	waitPage("the restore", func(s consoleState) bool { return s.MsgKind == "ok" && strings.Contains(s.Msg, "Restored") })
	if after, err := api.Stats(ctx); err != nil || after.PendingCount != before.PendingCount {
		t.Errorf("pending after the restore: %+v %v, want %d", after, err, before.PendingCount)
	}
	click(`.tab[data-state="pending"]`)
	waitPage("the restored items listed", func(s consoleState) bool { return len(s.Rows) == before.PendingCount })
	if st.Overflow {
		t.Errorf("the console is wider than a %s viewport", "1360px")
	}
	shot("console-final.png")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
