package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/cordonctl/internal/reportdoc"
	"github.com/cordonhq/cordon/internal/chromium"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/auditlog"
)

// outputsAnnotation lists, comma-separated, the -o formats a command
// accepts besides table and json.
const outputsAnnotation = "cordonctl/outputs"

// writeOut writes b to path (mode 0600: reports and inventories describe
// the hospital's access) or, with no path or "-", to stdout.
func (a *app) writeOut(path string, b []byte, what string) error {
	if path == "" || path == "-" {
		_, err := a.io.Out.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write the %s to %s: %w", what, path, err)
	}
	fmt.Fprintf(a.io.Err, "wrote the %s to %s\n", what, path)
	return nil
}

// parsePeriodEnd reads --from or --to: an RFC 3339 time, or a date
// (UTC); a date as --to means the end of that day, so --from 2026-10-01
// --to 2026-12-31 is the whole quarter.
func parsePeriodEnd(flag, s string, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, usagef("--%s %q: write a date (2026-10-01) or an RFC 3339 time (2026-10-01T00:00:00Z)", flag, s)
	}
	if end {
		d = d.AddDate(0, 0, 1)
	}
	return d, nil
}

// pdfPrinter prints HTML to PDF; tests replace it.
var pdfPrinter = func(ctx context.Context, html []byte) ([]byte, error) {
	path, err := chromium.Find()
	if err != nil {
		return nil, fmt.Errorf("-o pdf: %w, or write -o html and print that", err)
	}
	return reportdoc.PDF(ctx, path, html)
}

func (a *app) reportCmd() *cobra.Command {
	var from, to, out string
	hipaa := &cobra.Command{
		Use:   "hipaa --from DATE --to DATE [-o html|json|pdf] [--out FILE]",
		Short: "The HIPAA 164.312 and Zero Trust (CISA ZTMM) evidence report of a period, from live configuration and the audit log",
		Long: `Build the evidence report of a period: every 45 CFR 164.312 standard and
implementation specification (Required or Addressable) with the mechanism
that meets it, the live settings, and the period's figures counted from
the audit log (sessions and how many with MFA, idle logoffs, denied flows,
revocations, quarantines, ...); the 164.308 items the product supports; a
CISA Zero Trust Maturity Model v2 self-assessment per pillar; and every gap.

The controller verifies its audit log first and counts only records its
latest signed checkpoint covers; the report carries that checkpoint, and
cordonctl checks its signature. Save it and run 'cordonctl audit verify
--checkpoint FILE' later to prove the log still extends it.

-o html (the default) is one self-contained, printable page; -o pdf prints
it with headless Chromium (it must be installed: apt-get install chromium)
and needs --out; -o json is the data, described by
docs/hipaa-report.schema.json. Dates are UTC; a date as --to includes
that day. Needs the audit.read permission (owner, network-admin, auditor).`,
		Example: `  cordonctl report hipaa --from 2026-10-01 --to 2026-12-31 --out q4.html
  cordonctl report hipaa --from 2026-10-01 --to 2026-12-31 -o pdf --out q4.pdf
  cordonctl report hipaa --from 2026-10-01 --to 2026-12-31 -o json | jq -r .audit_log.checkpoint > q4-checkpoint.txt`,
		Annotations: map[string]string{outputsAnnotation: "html,pdf"},
		Args:        args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usagef("--from and --to are required, e.g. --from 2026-10-01 --to 2026-12-31")
			}
			f, err := parsePeriodEnd("from", from, false)
			if err != nil {
				return err
			}
			t, err := parsePeriodEnd("to", to, true)
			if err != nil {
				return err
			}
			if !f.Before(t) {
				return usagef("--from %s is not before --to %s", from, to)
			}
			format := a.output
			if format == "table" {
				format = "html"
			}
			if format == "pdf" && (out == "" || out == "-") {
				return usagef("-o pdf needs --out FILE")
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			rep, err := c.HIPAAReport(cmd.Context(), f, t)
			if err != nil {
				return err
			}
			if err := checkReportCheckpoint(rep.AuditLog); err != nil {
				return err
			}
			var buf bytes.Buffer
			switch format {
			case "json":
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				buf.Write(append(b, '\n'))
			case "html", "pdf":
				if err := reportdoc.HTML(&buf, rep); err != nil {
					return err
				}
				if format == "pdf" {
					pdf, err := pdfPrinter(cmd.Context(), buf.Bytes())
					if err != nil {
						return err
					}
					buf.Reset()
					buf.Write(pdf)
				}
			}
			if err := a.writeOut(out, buf.Bytes(), "report"); err != nil {
				return err
			}
			a.reportSummary(a.io.Err, rep)
			return nil
		}),
	}
	fl := hipaa.Flags()
	fl.StringVar(&from, "from", "", "first day (or RFC 3339 time) of the period, UTC")
	fl.StringVar(&to, "to", "", "last day of the period (included), or an RFC 3339 end time (excluded)")
	fl.StringVar(&out, "out", "", "write to FILE (mode 0600) instead of stdout")
	return a.group("report", "Evidence reports for auditors: HIPAA 164.312 and CISA ZTMM", hipaa)
}

// checkReportCheckpoint checks the signature of the checkpoint the report
// carries, with the key it names: a report whose checkpoint does not open
// is not written.
func checkReportCheckpoint(al adminapi.ReportAuditLog) error {
	if al.Checkpoint == "" {
		return nil // the report lists it as a gap
	}
	cp, err := auditlog.OpenCheckpoint([]byte(al.Checkpoint), al.Key)
	if err != nil {
		return notVerified("the report's audit checkpoint does not verify: %v", err)
	}
	if cp.Size != al.CheckpointSize {
		return notVerified("the report's audit checkpoint covers %d records, but the report says %d", cp.Size, al.CheckpointSize)
	}
	return nil
}

// reportSummary says on stderr what the report found.
func (a *app) reportSummary(w io.Writer, rep adminapi.HIPAAReport) {
	var gaps []string
	for _, g := range rep.Gaps {
		gaps = append(gaps, g.Title)
	}
	state := "verified"
	if !rep.AuditLog.Verified {
		state = "NOT verified"
	}
	fmt.Fprintf(w, "report %s to %s: %d 164.312 rows, audit log %s (checkpoint of %d records, signature checked), %d gaps\n",
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), len(rep.Technical), state, rep.AuditLog.CheckpointSize, len(gaps))
	for _, g := range gaps {
		fmt.Fprintf(w, "  gap: %s\n", sanitize(g))
	}
}
