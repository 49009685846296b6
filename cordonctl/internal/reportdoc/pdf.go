package reportdoc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"
)

// PDFTimeout bounds one print: starting the browser, loading the
// document, printing.
const PDFTimeout = 2 * time.Minute

// PDF prints the HTML document html to PDF (A4 portrait, backgrounds on,
// page numbers in the footer) with the Chromium at chromium, started
// headless for this print with a fresh profile and stopped after it. The
// document is loaded from a private temporary file: it needs no network,
// and its Content-Security-Policy forbids any fetch.
func PDF(ctx context.Context, chromium string, html []byte) ([]byte, error) {
	dir, err := os.MkdirTemp("", "cordon-report-")
	if err != nil {
		return nil, fmt.Errorf("print the report to PDF: %w", err)
	}
	defer os.RemoveAll(dir)
	doc := filepath.Join(dir, "report.html")
	if err := os.WriteFile(doc, html, 0o600); err != nil {
		return nil, fmt.Errorf("print the report to PDF: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, PDFTimeout)
	defer cancel()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true),
	}
	if os.Geteuid() == 0 {
		// Chromium refuses to start as root with its sandbox on.
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate("file://"+doc)); err != nil {
		return nil, fmt.Errorf("print the report to PDF: load it in %s: %w", chromium, err)
	}
	pdf, err := chromedp.Run(bctx, chromedp.PrintToPDF(
		chromedp.PDFPaper(chromedp.PaperA4), chromedp.PDFMargin(0.5), chromedp.PDFPrintBackground(),
		chromedp.PDFHeaderTemplate(`<span></span>`),
		chromedp.PDFFooterTemplate(`<div style="font-size:8px;width:100%;text-align:center"><span class="pageNumber"></span> / <span class="totalPages"></span></div>`),
	))
	if err != nil {
		return nil, fmt.Errorf("print the report to PDF in %s: %w", chromium, err)
	}
	return pdf, nil
}
