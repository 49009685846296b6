package cli

import "context"

// SetPDFPrinter replaces how report hipaa -o pdf prints HTML, for tests
// without a browser; it returns the function that restores it.
func SetPDFPrinter(f func(ctx context.Context, html []byte) ([]byte, error)) (restore func()) {
	old := pdfPrinter
	pdfPrinter = f
	return func() { pdfPrinter = old }
}
