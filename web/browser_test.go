package web_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/wire"
)

// findChromium returns the browser to drive: $SWAPBRIDGE_CHROMIUM, else
// Debian's /usr/bin/chromium, else chromium or google-chrome on PATH.
func findChromium() string {
	if p := os.Getenv("SWAPBRIDGE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// consoleErrors collects the page's console errors, uncaught exceptions
// and browser log entries at error level.
type consoleErrors struct {
	mu   sync.Mutex
	msgs []string
}

func (c *consoleErrors) listen(ctx context.Context) error {
	return chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			c.mu.Lock()
			c.msgs = append(c.msgs, msg)
			c.mu.Unlock()
		}
	})
}

func (c *consoleErrors) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// stationEventSeqs returns the seqs of every all-stations event with
// seq in (since, upto], read page by page from GET /api/events.
func stationEventSeqs(ctx context.Context, t *testing.T, c *client.Client, since, upto uint64) []uint64 {
	t.Helper()
	var out []uint64
	for since < upto {
		var page struct {
			Events    []struct{ Seq uint64 } `json:"events"`
			NextSince uint64                 `json:"next_since"`
			Gap       bool                   `json:"gap"`
		}
		if err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/api/events?since=%d&limit=1000", since), nil, &page); err != nil {
			t.Fatalf("GET /api/events: %v", err)
		}
		if page.Gap {
			t.Fatal("GET /api/events reports a retention gap in a fresh demo")
		}
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			if e.Seq <= upto {
				out = append(out, e.Seq)
			}
		}
		since = page.NextSince
	}
	return out
}

// pageSeqs is what the page reports about the events it handled.
type pageSeqs struct {
	Start uint64   `json:"start"`
	Seqs  []uint64 `json:"seqs"`
}

// evalJS evaluates expr in the page and decodes its value.
func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(actx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// TestDashboardInBrowser starts swapd --demo in-process, opens the
// dashboard in headless Chromium and checks what a newcomer would: every
// station is there, counts move live, booking through the page produces a
// notification, and after the sockets are cut the page reconnects and
// resumes without missing an event. With SWAPBRIDGE_SCREENSHOT=1 it saves
// docs/dashboard.png.
func TestDashboardInBrowser(t *testing.T) {
	chrome := findChromium()
	if chrome == "" {
		t.Skip("Chromium not found: install it (Debian: apt-get install chromium) or set SWAPBRIDGE_CHROMIUM; skipping the browser test")
	}
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := swapdtest.Config(t)
	cfg.Demo.Enabled = true
	cfg.Demo.Stations = 6
	// The observer books at several stations to make events happen while
	// the page watches; the contract's per-user limit (2) is not under test.
	cfg.Domain.MaxActiveBookings = 10
	var banner bytes.Buffer
	demo, err := server.StartDemo(ctx, cfg, nil, &banner)
	if err != nil {
		t.Fatalf("StartDemo: %v", err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		if err := demo.Shutdown(sctx); err != nil {
			t.Errorf("demo shutdown: %v", err)
		}
	}()
	backend := "http://" + demo.HTTPAddr()
	anon := client.New(backend, "")
	adminToken, _ := demo.Server().AdminToken()
	admin := client.New(backend, adminToken)
	observerUser, err := admin.CreateUser(ctx, "observer")
	if err != nil {
		t.Fatalf("create observer user: %v", err)
	}
	observer := client.New(backend, observerUser.Token)

	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
	)
	defer allocCancel()
	bctx, bcancel := chromedp.NewContext(allocCtx)
	defer bcancel()
	var errs consoleErrors
	if err := errs.listen(bctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", chrome, err)
	}

	step := func(what string) (context.Context, context.CancelFunc) {
		return context.WithTimeout(bctx, 45*time.Second)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, acancel := step(what)
		defer acancel()
		if err := chromedp.Do(actx, actions...); err != nil {
			t.Fatalf("%s: %v (console errors so far: %q)", what, err, errs.list())
		}
	}
	text := func(what, sel string) string {
		t.Helper()
		actx, acancel := step(what)
		defer acancel()
		v, err := chromedp.Run(actx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	// waitJS polls a JavaScript expression until it is true.
	waitJS := func(what, expr string) {
		t.Helper()
		run(what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second)))
	}

	run("open the dashboard", chromedp.Navigate(backend+"/"))
	waitJS("the connection indicator shows live", `document.getElementById('conn').dataset.state === 'live'`)

	// Every station from /api/stations is on the page, and comes online.
	stations, err := anon.Stations(ctx)
	if err != nil || len(stations) != 6 {
		t.Fatalf("GET /api/stations: %d stations, %v; want 6", len(stations), err)
	}
	for _, st := range stations {
		sel := fmt.Sprintf(`li.station[data-station=%q]`, st.ID)
		run("station "+st.ID+" on the page", chromedp.WaitVisible(chromedp.CSS(sel)))
		name := text("station name", sel+" .st-name")
		if name != st.Name {
			t.Errorf("station %s shows name %q, want %q", st.ID, name, st.Name)
		}
		waitJS("station "+st.ID+" online", fmt.Sprintf(`document.querySelector(%q).dataset.status === 'online'`, sel))
	}

	// A count changes live: another user books at the first station; its
	// booked count on the page follows without a reload.
	first := stations[0].ID
	bookedSel := fmt.Sprintf(`li.station[data-station=%q] [data-count="booked"]`, first)
	before := text("read the booked count", bookedSel)
	if _, err := observer.Book(ctx, first); err != nil {
		t.Fatalf("observer books at %s: %v", first, err)
	}
	waitJS("the booked count changes live", fmt.Sprintf(`document.querySelector(%q).textContent !== %q`, bookedSel, before))

	// The station detail shows each slot of the station.
	run("open the detail of "+first, chromedp.Click(chromedp.CSS(fmt.Sprintf(`li.station[data-station=%q] .st-actions button:not([data-action])`, first))))
	waitJS("the slots are listed", fmt.Sprintf(`document.querySelectorAll('#detail .slot').length === %d`, stations[0].TotalSlots))
	waitJS("a reserved slot is shown", `document.querySelector('#detail .tag.reserved') !== null`)
	run("back to the grid", chromedp.Click(chromedp.CSS(`#back`)), chromedp.WaitVisible(chromedp.CSS(`#station-grid`)))

	// Booking through the page as the demo user produces a notification.
	// The demo user books where most batteries are ready, so the booking is
	// ready at once and can be collected.
	now, err := anon.Stations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]wire.StationView{}
	for _, v := range now {
		byID[v.ID] = v
	}
	candidates := []string{stations[1].ID, stations[4].ID, stations[5].ID}
	slices.SortStableFunc(candidates, func(a, b string) int { return byID[b].AvailableBatteries - byID[a].AvailableBatteries })
	second, fifth := candidates[0], candidates[1]
	run("sign in as the demo user", chromedp.WaitVisible(chromedp.CSS(`#demo-signin`)), chromedp.Click(chromedp.CSS(`#demo-signin`)),
		chromedp.WaitVisible(chromedp.CSS(`#signed-in`)))
	waitJS("the user name is shown", fmt.Sprintf(`document.getElementById('user-id').textContent === %q`, demo.UserID()))
	run("book at "+second, chromedp.Click(chromedp.CSS(fmt.Sprintf(`li.station[data-station=%q] button[data-action="book"]`, second))))
	waitJS("a booking notification arrives", `document.querySelector('#notifications li[data-type="booking_confirmed"], #notifications li[data-type="booking_ready"]') !== null`)
	waitJS("the booking is listed with its buttons", `document.querySelector('#bookings li[data-booking] button[data-action="cancel"]') !== null`)

	// Collect: once ready, Collect unlocks the slot, the simulated rider
	// takes the battery, and the booking turns collected.
	bookingID := evalJS[string](t, bctx, `document.querySelector('#bookings li[data-booking]').dataset.booking`)
	bookingLi := fmt.Sprintf(`#bookings li[data-booking=%q]`, bookingID)
	waitJS("the booking is ready", fmt.Sprintf(`document.querySelector(%q)?.dataset.status === 'ready'`, bookingLi))
	run("collect", chromedp.Click(chromedp.CSS(bookingLi+` button[data-action="collect"]`)))
	waitJS("the booking is collected", fmt.Sprintf(`document.querySelector(%q)?.dataset.status === 'collected'`, bookingLi))

	// Cancel: a second booking is cancelled from the page.
	run("book at "+fifth, chromedp.Click(chromedp.CSS(fmt.Sprintf(`li.station[data-station=%q] button[data-action="book"]`, fifth))))
	waitJS("the second booking is listed", fmt.Sprintf(`[...document.querySelectorAll('#bookings li[data-booking]')].some(li => li.dataset.booking !== %q && li.querySelector('button[data-action="cancel"]'))`, bookingID))
	cancelID := evalJS[string](t, bctx, fmt.Sprintf(`[...document.querySelectorAll('#bookings li[data-booking]')].find(li => li.dataset.booking !== %q && li.querySelector('button[data-action="cancel"]')).dataset.booking`, bookingID))
	cancelLi := fmt.Sprintf(`#bookings li[data-booking=%q]`, cancelID)
	run("cancel", chromedp.Click(chromedp.CSS(cancelLi+` button[data-action="cancel"]`)))
	waitJS("the booking is cancelled", fmt.Sprintf(`document.querySelector(%q)?.dataset.status === 'cancelled'`, cancelLi))

	// The server closes every socket (1012, as before a restart): the
	// indicator shows reconnecting, then the page resumes and has missed
	// nothing.
	histLen := evalJS[int](t, bctx, `window.dashboard.connHistory.length`)
	if n := demo.Server().DisconnectWebSockets("server restart"); n < 2 {
		t.Fatalf("closed %d sockets, want at least 2 (stations and notifications)", n)
	}
	// Events while the page is away: the observer books at a third station.
	third := stations[2].ID
	if _, err := observer.Book(ctx, third); err != nil {
		t.Fatalf("observer books at %s: %v", third, err)
	}
	waitJS("the indicator showed reconnecting", fmt.Sprintf(`window.dashboard.connHistory.slice(%d).includes('reconnecting')`, histLen))
	waitJS("the page resumed", fmt.Sprintf(`(() => { const h = window.dashboard.connHistory.slice(%d); const i = h.indexOf('reconnecting'); return i >= 0 && h.slice(i).includes('resumed'); })()`, histLen))
	waitJS("the indicator is live again", `document.getElementById('conn').dataset.state === 'live'`)
	waitJS("the event during the outage is on the page", fmt.Sprintf(`document.querySelector('#feed li[data-type="battery_booked"] .ev-text') !== null && [...document.querySelectorAll('#feed li[data-type="battery_booked"] .ev-text')].some(e => e.textContent.startsWith(%q))`, stations[2].Name+":"))

	checkSeqs := func(when string) {
		t.Helper()
		got := evalJS[pageSeqs](t, bctx, `({start: window.dashboard.startSeq, seqs: window.dashboard.seqs})`)
		if len(got.Seqs) == 0 {
			t.Fatalf("%s: the page handled no events", when)
		}
		want := stationEventSeqs(ctx, t, anon, got.Start, got.Seqs[len(got.Seqs)-1])
		if !slices.Equal(got.Seqs, want) {
			t.Errorf("%s: the page's events differ from /api/events after seq %d:\n page %v\n  api %v", when, got.Start, got.Seqs, want)
		}
	}
	checkSeqs("after the reconnect")

	// A reload shows the recent events and the user's past notifications at
	// once, then goes on live from where the history ended.
	run("reload", chromedp.Reload())
	waitJS("live after the reload", `document.getElementById('conn').dataset.state === 'live'`)
	waitJS("the feed shows recent events", `document.querySelectorAll('#feed li[data-seq]').length > 0`)
	waitJS("the past booking notification is listed", `document.querySelector('#notifications li[data-type="booking_confirmed"]') !== null`)
	if _, err := observer.Book(ctx, stations[3].ID); err != nil {
		t.Fatalf("observer books at %s: %v", stations[3].ID, err)
	}
	waitJS("a new event after the reload", fmt.Sprintf(`[...document.querySelectorAll('#feed li[data-type="battery_booked"] .ev-text')].some(e => e.textContent.startsWith(%q))`, stations[3].Name+":"))
	checkSeqs("after the reload")

	// Every control has an accessible name.
	unnamed := evalJS[[]string](t, bctx, `[...document.querySelectorAll('button, input, [role=progressbar]')]
		.filter(e => !((e.getAttribute('aria-label') || '').trim() || (e.labels && e.labels.length) || (e.textContent || '').trim()))
		.map(e => e.outerHTML.slice(0, 80))`)
	if len(unnamed) > 0 {
		t.Errorf("controls without an accessible name: %q", unnamed)
	}

	// On a phone-sized screen nothing is wider than the screen, in the grid
	// and in a station's detail.
	run("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for view, ready := range map[string]string{
		"#/":                  `!document.getElementById('grid-view').hidden && document.querySelectorAll('#station-grid .station').length > 0`,
		"#/stations/" + first: `!document.getElementById('detail-view').hidden && document.querySelectorAll('#detail .slot').length > 0`,
	} {
		run("show "+view, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = %q`, view)))
		waitJS("the view "+view+" is shown", ready)
		// A mobile layout viewport widens to fit content that overflows.
		if w := evalJS[int](t, bctx, `Math.max(document.documentElement.scrollWidth, window.innerWidth)`); w > 391 {
			t.Errorf("view %s is %d px wide on a 390 px screen", view, w)
		}
	}
	run("desktop viewport", chromedp.EmulateViewport(1440, 1000), chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`))
	waitJS("the grid is back", `!document.getElementById('grid-view').hidden`)

	if os.Getenv("SWAPBRIDGE_SCREENSHOT") == "1" {
		actx, acancel := step("screenshot")
		png, err := chromedp.Run(actx, chromedp.FullScreenshot(100))
		acancel()
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join("..", "docs", "dashboard.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatalf("save screenshot: %v", err)
		}
		t.Logf("screenshot saved to %s", path)
	}

	if e := errs.list(); len(e) > 0 {
		t.Errorf("console errors on the page:\n%s", strings.Join(e, "\n"))
	}
}
