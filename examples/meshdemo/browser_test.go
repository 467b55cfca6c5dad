package main_test

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// pageState is what the browser test reads from the live page.
type pageState struct {
	Marker   int      `json:"marker"`
	Navs     int      `json:"navs"`
	Updates  int      `json:"updates"`
	Pending  string   `json:"pending"`
	Active   string   `json:"active"`
	Peers    []string `json:"peers"`
	MaxSeq   int64    `json:"maxSeq"`
	Rows     int      `json:"rows"`
	Points   int      `json:"points"`
	BPBadge  string   `json:"bpBadge"`
	BPRows   int      `json:"bpRows"`
	Live     string   `json:"live"`
	Overflow bool     `json:"overflow"`
}

const readPage = `(() => {
  const q = (s) => [...document.querySelectorAll(s)];
  return {
    marker: window.__e2eMarker || 0,
    navs: performance.getEntriesByType("navigation").length,
    updates: +(document.body.dataset.updates || 0),
    pending: document.getElementById("pending").textContent,
    active: document.getElementById("active").textContent,
    peers: q("#peers-body tr[data-peer]").map(r => r.dataset.peer),
    maxSeq: Math.max(0, ...q("#events-body tr[data-seq]").map(r => +r.dataset.seq)),
    rows: q("#events-body tr[data-seq]").length,
    points: +(document.getElementById("chart").dataset.points || 0),
    bpBadge: document.getElementById("bp-badge").textContent,
    bpRows: q("#bp-body tr").filter(r => !r.querySelector(".muted")).length,
    live: document.getElementById("live").textContent,
    overflow: document.documentElement.scrollWidth > window.innerWidth,
  };
})()`

// TestBrowserShowsLiveDiagnostics loads the diagnostics page of a running
// demo (every role in one process) in headless Chromium and checks, without
// reloading, that the peers, the queue depth, the chart and new replication
// events appear and change, and that a backpressure transition shows up.
// It keeps a screenshot as a test artifact.
func TestBrowserShowsLiveDiagnostics(t *testing.T) {
	chromium := needTool(t, "chromium")
	// Producing faster than two slow workers consume makes the queue grow
	// past a low high-watermark, so backpressure turns on and off. The OS
	// picks both ports; the banner says which.
	demo := startProc(t, "demo", t.TempDir(), "--",
		"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0",
		"--meshDemo:seederIntervalSeconds=0.1", "--meshDemo:workerProcessingSeconds=0.7",
		"--meshDemo:highWatermark=12", "--meshDemo:lowWatermark=4", "--meshDemo:backpressureCooldownSeconds=1",
		"--meshDemo:heartbeatIntervalSeconds=0.3", "--meshDemo:dataDirectory=data")
	base := strings.TrimSuffix(demo.bannerURL(t, "Diagnostics UI"), "/")
	eventually(t, 30*time.Second, "the diagnostics port", func() bool {
		if demo.exited() {
			t.Fatalf("the demo exited: %v", demo.err)
		}
		status, _, ok := get(base + "/")
		return ok && status == 200
	})

	page := newBrowserPage(t, chromium, 90*time.Second)
	if err := chromedp.Do(page, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("loading the diagnostics page: %v", err)
	}

	var st pageState
	read := func() pageState {
		t.Helper()
		s, err := chromedp.Run(page, chromedp.Evaluate[pageState](readPage))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return s
	}
	eventually(t, 30*time.Second, "the page to show both workers", func() bool {
		s, err := chromedp.Run(page, chromedp.Evaluate[pageState](readPage))
		if err != nil {
			return false // the page's script has not run yet
		}
		st = s
		return st.Updates > 0 && slices.Contains(st.Peers, "mesh-worker-a") && slices.Contains(st.Peers, "mesh-worker-b")
	})
	// Mark the window: a reload would clear the mark.
	if err := chromedp.Do(page, chromedp.Evaluate[chromedp.Void]("window.__e2eMarker = 1")); err != nil {
		t.Fatal(err)
	}
	first := read()
	if first.Rows == 0 || first.MaxSeq == 0 {
		t.Fatalf("no replication events on the page: %+v", first)
	}

	pendingSeen := map[string]bool{first.Pending: true}
	activeSeen := map[string]bool{first.Active: true}
	eventually(t, 40*time.Second, "the page to update itself: new events, chart points, changing depth, a backpressure transition", func() bool {
		st = read()
		pendingSeen[st.Pending] = true
		activeSeen[st.Active] = true
		return st.Updates >= first.Updates+3 && st.MaxSeq > first.MaxSeq && st.Points > first.Points &&
			len(pendingSeen) >= 3 && st.BPRows > 0
	})
	if st.Marker != 1 || st.Navs != 1 {
		t.Errorf("the page reloaded (marker %d, navigations %d); it must update in place", st.Marker, st.Navs)
	}
	if st.Overflow {
		t.Errorf("the page is wider than a %s viewport", "1360px")
	}
	t.Logf("page after %d updates: pending values seen %v, active values %v, events up to #%d, %d chart points, backpressure %q with %d transitions, %q",
		st.Updates, slices.Sorted(maps.Keys(pendingSeen)), slices.Sorted(maps.Keys(activeSeen)), st.MaxSeq, st.Points, st.BPBadge, st.BPRows, st.Live)

	// The console lists the live queue's pending items; open the oldest.
	eventually(t, 20*time.Second, "pending items in the console", func() bool {
		n, err := chromedp.Run(page, chromedp.Evaluate[int](`document.querySelectorAll("#items-body tr[data-seq] button[data-open]").length`))
		return err == nil && n > 0
	})
	update := os.Getenv("UPDATE_MESHDEMO_SCREENSHOT") == "1"
	if update {
		time.Sleep(25 * time.Second) // a fuller chart for the README's picture
	}
	// The newest pending item, from a fresh page: it stays pending longest.
	loads, err := chromedp.Run(page, chromedp.Evaluate[int](`+(document.body.dataset.itemLoads || 0)`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(page, chromedp.Click(chromedp.CSS("#refresh-btn"))); err != nil {
		t.Fatalf("refreshing the list: %v", err)
	}
	eventually(t, 10*time.Second, "the refreshed list", func() bool {
		n, err := chromedp.Run(page, chromedp.Evaluate[int](`+(document.body.dataset.itemLoads || 0)`))
		return err == nil && n > loads
	})
	if err := chromedp.Do(page, chromedp.Click(chromedp.CSS("#items-body tr[data-seq]:last-child button[data-open]"))); err != nil {
		t.Fatalf("opening an item: %v", err)
	}
	eventually(t, 10*time.Second, "the item's detail", func() bool {
		kind, err := chromedp.Run(page, chromedp.Evaluate[string](`(document.getElementById("detail-body") || {dataset: {}}).dataset.kind || document.getElementById("detail").dataset.state || ""`))
		return err == nil && kind != ""
	})
	png, err := chromedp.Run(page, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactsDir(t), "diagnostics.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	// UPDATE_MESHDEMO_SCREENSHOT=1 refreshes the README's copy.
	if update {
		if err := os.WriteFile(filepath.Join("docs", "diagnostics.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
