package main_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// newBrowserPage starts headless Chromium (a fresh profile, no background
// networking) and returns the context of its first tab, bounded by within.
// The browser is stopped when the test ends; its output is logged if the
// test failed.
func newBrowserPage(t *testing.T, chromium string, within time.Duration) context.Context {
	t.Helper()
	ctx := ctxFor(t, within)
	var chromiumLog lockedBuffer
	allocCtx, closeAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), // a fresh profile
		chromedp.WindowSize(1360, 900),
		chromedp.CombinedOutput(&chromiumLog),
	)
	page, closePage := chromedp.NewContext(allocCtx)
	// Registered after t.TempDir, so it runs first: the browser is gone
	// before its profile directory is removed.
	t.Cleanup(func() {
		closePage()
		closeAlloc()
		if t.Failed() {
			t.Logf("chromium output (last 2 KiB):\n%s", tail(chromiumLog.String(), 2048))
		}
	})
	return page
}
