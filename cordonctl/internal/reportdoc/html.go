// Package reportdoc renders cordonctl's evidence report
// (adminapi.HIPAAReport) as a self-contained, printable HTML document (inline
// CSS, no script, no external asset; a Content-Security-Policy forbids
// loading any) and prints that document to PDF in headless Chromium.
//
// Every 164.312 row carries data-section, every figure data-figure with
// its value, so a test (or an auditor's tool) can read the document back.
package reportdoc

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

//go:embed report.html.tmpl
var tmplText string

var tmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"dur":  func(sec int64) string { return adminapi.FormatLimit(time.Duration(sec) * time.Second) },
	"day":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"join": strings.Join,
	"rowArgs": func(v view, r adminapi.Safeguard) rowData {
		return rowData{Row: r, Figure: v.Figure, Gap: v.Gap}
	},
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
}).Parse(tmplText))

// view is what the template reads: the report, and its figures and gaps
// by ID for the rows that name them.
type view struct {
	adminapi.HIPAAReport
	Figure map[string]adminapi.ReportFigure
	Gap    map[string]adminapi.ReportGap
}

// rowData is what the "row" template reads.
type rowData struct {
	Row    adminapi.Safeguard
	Figure map[string]adminapi.ReportFigure
	Gap    map[string]adminapi.ReportGap
}

// HTML writes the report as one HTML document.
func HTML(w io.Writer, r adminapi.HIPAAReport) error {
	v := view{HIPAAReport: r, Figure: map[string]adminapi.ReportFigure{}, Gap: map[string]adminapi.ReportGap{}}
	for _, f := range r.Figures {
		v.Figure[f.ID] = f
	}
	for _, g := range r.Gaps {
		v.Gap[g.ID] = g
	}
	if err := tmpl.Execute(w, v); err != nil {
		return fmt.Errorf("render the report as HTML: %w", err)
	}
	return nil
}
