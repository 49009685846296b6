package cli

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Audit search, retention and archiving (docs/audit.md).

// csvAnnotation marks the commands that accept -o csv.
const csvAnnotation = "cordonctl/csv"

func (a *app) auditSearchCmds() []*cobra.Command {
	var (
		q            adminapi.AuditSearch
		since, until string
		limit        int
		all          bool
	)
	search := &cobra.Command{
		Use:   "search [--user U] [--device D] [--app A] [--type T] [--outcome O] [--since T] [--until T] [--limit N | --all] [--cursor C]",
		Short: "Search the audit trail: by user, device, app, event type, outcome and time, newest first",
		Long: `Every filter given must match. --type is an exact type or a prefix ending in
'.' (flow., auth., admin.). --user, --device and --app match the user, device
and app a record is about, wherever its type keeps them (docs/audit-events.md).
--since and --until take an RFC 3339 time or an age such as 24h, 90m or 30d
(before now); --until is exclusive.

Results come newest first, in pages; --limit (default 100) bounds how many
are printed, --all prints every match (for reports). When more remain,
cordonctl prints a cursor: --cursor continues from there with the same
filters, also while records arrive (new records are newer than the search
and are not in it).

-o csv writes a CSV report (a cell that a spreadsheet would run as a formula
starts with a ' ), -o json one JSON object with the events and the cursor.`,
		Example: `  cordonctl audit search --user nurse --since 24h
  cordonctl audit search --app ehr --type flow.deny --since 2026-11-01T00:00:00Z --all -o csv > ehr-denies.csv
  cordonctl audit search --device dev-3f2a9c01d2 --outcome failure -o json`,
		Annotations: map[string]string{csvAnnotation: "yes"},
		Args:        args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			now := a.io.Now()
			var err error
			if q.Since, err = parseWhen(since, now); err != nil {
				return usagef("--since: %v", err)
			}
			if q.Until, err = parseWhen(until, now); err != nil {
				return usagef("--until: %v", err)
			}
			if limit < 0 || all && cmd.Flags().Changed("limit") {
				return usagef("--limit %d: a positive number, or --all alone", limit)
			}
			if !all && limit == 0 {
				limit = 100
			}
			return a.search(cmd, q, limit)
		}),
	}
	f := search.Flags()
	f.StringVar(&q.User, "user", "", "records about this user")
	f.StringVar(&q.Device, "device", "", "records about this device (ID)")
	f.StringVar(&q.App, "app", "", "records about this app")
	f.StringVar(&q.Type, "type", "", "event type, or a prefix ending in '.' (flow., auth.)")
	f.StringVar(&q.Outcome, "outcome", "", "outcome: success, failure, allow, deny, cut, invalid, alert")
	f.StringVar(&since, "since", "", "from this time on: RFC 3339, or an age (24h, 30d)")
	f.StringVar(&until, "until", "", "before this time: RFC 3339, or an age")
	f.IntVar(&limit, "limit", 0, "most records to print (default 100)")
	f.BoolVar(&all, "all", false, "print every match")
	f.StringVar(&q.Cursor, "cursor", "", "continue a search (the cursor it printed)")

	var (
		to           int64
		reason, file string
	)
	archive := &cobra.Command{
		Use:   "archive --to SEQ --reason TEXT -f BUNDLE",
		Short: "Archive the oldest audit records: write their bundle, then ask a second admin to approve",
		Long: `Writes the bundle of the records not archived yet up to --to (as 'audit
export' does, and verifies it), then asks the controller to archive them:
their bodies leave the database, their tree hashes stay, so the log still
verifies and the bundle verifies offline against it. Keep the bundle: it is
the only copy of the records.

Before the retention end of the newest record (--audit-retention-years on the
controller, 6 years by default) another admin must approve the request with
'cordonctl audit approve ID' before it expires. Records all past their
retention end are archived at once. Every step is an audit record.`,
		Example: `  cordonctl audit archive --to 4500000 --reason "CHG-88 move 2019 to cold storage" -f audit-2019.jsonl`,
		Args:    args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if file == "" || reason == "" || to < 1 {
				return usagef("--to, --reason and --file are required")
			}
			if err := a.exportBundle(cmd, file, 0, to); err != nil {
				return err
			}
			sum, err := fileSHA256(file)
			if err != nil {
				return err
			}
			var res adminapi.ArchiveResult
			printed, err := a.do(cmd, "POST", "/v1/audit/archive", adminapi.ArchiveRequestBody{ToSeq: to, Reason: reason, BundleSHA256: sum}, &res)
			if err != nil || printed {
				return err
			}
			switch {
			case res.Archive != nil:
				x := res.Archive
				fmt.Fprintf(a.io.Out, "archived records %d to %d (all past their retention end, %s); root at seq %d: %s\nkeep %s (sha256 %s): it holds their only copy\n",
					x.FromSeq, x.ToSeq, res.RetentionEnd.Format(time.RFC3339), x.ToSeq, x.Root, file, sum)
			case res.Request != nil:
				r := res.Request
				fmt.Fprintf(a.io.Out, "archive request %s: records %d to %d (retention ends %s)\nanother admin approves it before %s with: cordonctl audit approve %s\n",
					r.ID, r.FromSeq, r.ToSeq, res.RetentionEnd.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339), r.ID)
			}
			return nil
		}),
	}
	archive.Flags().Int64Var(&to, "to", 0, "last record to archive (seq)")
	archive.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	archive.Flags().StringVarP(&file, "file", "f", "", "the bundle to write first (mode 0600)")

	approve := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve another admin's archive request: the records are archived now",
		Args:  args("ID"),
		RunE: a.run(func(cmd *cobra.Command, xs []string) error {
			var x adminapi.AuditArchive
			printed, err := a.do(cmd, "POST", "/v1/audit/archive/"+esc(xs[0])+"/approve", nil, &x)
			if err != nil || printed {
				return err
			}
			fmt.Fprintf(a.io.Out, "archived records %d to %d (requested by %s); root at seq %d: %s; bundle sha256 %s\n",
				x.FromSeq, x.ToSeq, x.RequestedBy, x.ToSeq, x.Root, x.BundleSHA256)
			return nil
		}),
	}

	archives := &cobra.Command{
		Use:   "archives",
		Short: "List archived ranges and archive requests",
		Args:  args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out adminapi.AuditArchives
			printed, err := a.do(cmd, "GET", "/v1/audit/archives", nil, &out)
			if err != nil || printed {
				return err
			}
			fmt.Fprintf(a.io.Out, "retention: %d years\n", out.RetentionYears)
			t := newTable(a.io.Out, "FROM", "TO", "AT", "REQUESTED BY", "APPROVED BY", "ROOT", "BUNDLE SHA256", "REASON")
			for _, x := range out.Archived {
				t.row(fmt.Sprint(x.FromSeq), fmt.Sprint(x.ToSeq), fmtTime(x.At), x.RequestedBy, x.ApprovedBy, x.Root, x.BundleSHA256, x.Reason)
			}
			if err := t.flush(); err != nil {
				return err
			}
			t = newTable(a.io.Out, "REQUEST", "FROM", "TO", "BY", "CREATED", "EXPIRES", "APPROVED BY", "REASON")
			for _, r := range out.Requests {
				t.row(r.ID, fmt.Sprint(r.FromSeq), fmt.Sprint(r.ToSeq), r.RequestedBy, fmtTime(r.CreatedAt), fmtTime(r.ExpiresAt), r.ApprovedBy, r.Reason)
			}
			return t.flush()
		}),
	}
	return []*cobra.Command{search, archive, approve, archives}
}

// parseWhen reads an RFC 3339 time, or an age before now ("24h", "30d").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAge(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor an age (24h, 90m, 30d)", s)
	}
	return now.Add(-d), nil
}

// parseAge is time.ParseDuration with days ("30d"); not negative.
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad age %q", s)
	}
	return d, nil
}

// search prints up to limit matches (0: all), a page at a time, in the
// output format, and the cursor to go on with when more remain.
func (a *app) search(cmd *cobra.Command, q adminapi.AuditSearch, limit int) error {
	c, err := a.getClient()
	if err != nil {
		return err
	}
	w := newSearchWriter(a.output, a.io.Out)
	printed := 0
	for {
		q.Limit = adminapi.MaxAuditLimit
		if limit > 0 {
			q.Limit = min(limit-printed, adminapi.MaxAuditLimit)
		}
		p, err := c.SearchAudit(cmd.Context(), q)
		if err != nil {
			return err
		}
		if err := w.events(p.Events); err != nil {
			return err
		}
		printed += len(p.Events)
		q.Cursor = p.NextCursor
		if q.Cursor == "" || limit > 0 && printed >= limit {
			break
		}
	}
	if err := w.end(q.Cursor); err != nil {
		return err
	}
	if q.Cursor != "" && a.output != "json" {
		fmt.Fprintf(a.io.Err, "more records match: continue with --cursor %s\n", q.Cursor)
	}
	return nil
}

// searchWriter writes search results as they arrive.
type searchWriter struct {
	format string
	out    io.Writer
	csv    *csv.Writer
	n      int
	table  []adminapi.AuditEvent
}

func newSearchWriter(format string, out io.Writer) *searchWriter {
	w := &searchWriter{format: format, out: out}
	switch format {
	case "csv":
		w.csv = csv.NewWriter(out)
		w.csv.Write([]string{"seq", "time", "type", "actor", "outcome", "subject", "user", "device", "app", "request_id", "details"})
	case "json":
		io.WriteString(out, `{"events":[`)
	}
	return w
}

func (w *searchWriter) events(evs []adminapi.AuditEvent) error {
	switch w.format {
	case "csv":
		for _, e := range evs {
			k := audit.KeysOf(e.Type, e.Actor, e.Subject, e.Details)
			details := ""
			if len(e.Details) > 0 {
				b, _ := json.Marshal(e.Details) // sorted keys
				details = string(b)
			}
			w.csv.Write(csvSafe(strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(time.RFC3339Nano), string(e.Type), e.Actor, e.Outcome,
				e.Subject, k.User, k.Device, k.App, e.RequestID, details))
		}
		w.csv.Flush()
		return w.csv.Error()
	case "json":
		for _, e := range evs {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if w.n > 0 {
				io.WriteString(w.out, ",")
			}
			io.WriteString(w.out, "\n  ")
			if _, err := w.out.Write(b); err != nil {
				return err
			}
			w.n++
		}
		return nil
	}
	// A table aligns its columns over every row: it is written at the end
	// (a report of millions of records wants -o csv).
	w.table = append(w.table, evs...)
	return nil
}

func (w *searchWriter) end(cursor string) error {
	switch w.format {
	case "csv":
		return nil
	case "json":
		c, _ := json.Marshal(cursor)
		_, err := fmt.Fprintf(w.out, "\n],\"next_cursor\":%s}\n", c)
		return err
	}
	return printAudit(w.out, w.table)
}

// csvSafe keeps a spreadsheet from running a cell as a formula (OWASP
// "CSV injection"): a cell that starts with = + - @ or a tab or carriage
// return gets a leading '. User names and subjects come from whoever
// signed in or sent a request, so they may be chosen to attack the
// auditor's spreadsheet.
func csvSafe(cells ...string) []string {
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			cells[i] = "'" + c
		}
	}
	return cells
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// archivedLines describes archived ranges for audit verify.
func archivedLines(xs []adminapi.AuditArchive) []string {
	sort.Slice(xs, func(i, j int) bool { return xs[i].FromSeq < xs[j].FromSeq })
	var out []string
	for _, x := range xs {
		by := x.RequestedBy
		if x.ApprovedBy != "" {
			by += ", approved by " + x.ApprovedBy
		}
		out = append(out, fmt.Sprintf("archived: records %d to %d on %s (%s); their hashes match the root %s; their bodies are in the bundle with sha256 %s: verify it with cordonctl audit verify --bundle FILE, which prints the same root",
			x.FromSeq, x.ToSeq, x.At.Format(time.RFC3339), by, x.Root, x.BundleSHA256))
	}
	return out
}
