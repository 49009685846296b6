package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cordonhq/cordon/internal/browsertest"
)

// TestReportInBrowser renders the HTML report in real headless Chromium:
// every 164.312 row is in the DOM, the figures shown are those the API
// reports, and the report printed to PDF by cordonctl (the same browser
// code a user runs) is a PDF. The screenshot, the HTML, the PDF and the
// JSON (validated against its schema) are kept as artifacts.
func TestReportInBrowser(t *testing.T) {
	path := browsertest.Chromium(t, "the HIPAA report")
	dir := browsertest.Artifacts(t)
	h, admin, from, to := reportWorld(t)
	day := from.Format(time.DateOnly)

	htmlFile, pdfFile := filepath.Join(dir, "report.html"), filepath.Join(dir, "report.pdf")
	h.ok("report", "hipaa", "--from", day, "--to", day, "--out", htmlFile)
	h.ok("report", "hipaa", "--from", day, "--to", day, "-o", "pdf", "--out", pdfFile)
	if b, err := os.ReadFile(pdfFile); err != nil || !bytes.HasPrefix(b, []byte("%PDF-")) || len(b) < 10_000 {
		t.Errorf("report.pdf: %d bytes, %v: want a PDF of the report", len(b), err)
	}
	rep, err := admin.HIPAAReport(t.Context(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	validateReportSchema(t, js)
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx := t.Context()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate("file://"+htmlFile)); err != nil {
		t.Fatalf("open the report in chromium: %v", err)
	}
	sections, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#technical-table tr[data-section]')].map(e => e.dataset.section)`))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range rep.Technical {
		want = append(want, r.Section)
	}
	if len(want) != 12 || !slices.Equal(sections, want) {
		t.Errorf("164.312 rows in the DOM: %q\nwant %q", sections, want)
	}
	shown, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll('#figures tr[data-figure]')].map(e => [e.dataset.figure, e.querySelector('.figure-value').innerText]))`))
	if err != nil {
		t.Fatal(err)
	}
	if len(shown) != len(rep.Figures) {
		t.Errorf("%d figures shown, the API reports %d", len(shown), len(rep.Figures))
	}
	for _, f := range rep.Figures {
		if shown[f.ID] != strconv.FormatInt(f.Value, 10) {
			t.Errorf("figure %s shows %q, the API reports %d", f.ID, shown[f.ID], f.Value)
		}
	}
	if rep.Figures[0].Value == 0 {
		t.Error("the first figure is 0: the seeded sessions were not counted")
	}
	cp, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#checkpoint")))
	if err != nil || cp == "" || !strings.HasPrefix(rep.AuditLog.Checkpoint, strings.SplitN(cp, "\n", 2)[0]) {
		t.Errorf("checkpoint shown %q (%v), the report carries %q", cp, err, rep.AuditLog.Checkpoint)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
