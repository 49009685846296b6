package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/auditlog"
)

// The verifiable audit log: verify, export, checkpoint, key
// (docs/audit.md).

// notVerifiedError is a log or bundle that failed verification (exit 7).
type notVerifiedError struct{ msg string }

func (e *notVerifiedError) Error() string { return e.msg }

func notVerified(format string, args ...any) error {
	return &notVerifiedError{msg: fmt.Sprintf(format, args...)}
}

func (a *app) auditLogCmds() []*cobra.Command {
	var (
		bundle, earlierFile, key string
		from, to                 int64
		file                     string
	)
	verify := &cobra.Command{
		Use:   "verify [--bundle FILE] [--checkpoint FILE] [--key KEY]",
		Short: "Verify the audit log: every record in the signed tree, and that it only grew",
		Long: `Without --bundle, the controller checks its whole stored log (every record
hashes to the leaf logged when it was appended and all of them to every
signed checkpoint; nothing deleted, edited, inserted or reordered) and names
the first bad record; cordonctl then checks the latest checkpoint's
signature itself and, with --checkpoint, the consistency proof that the log
extends that earlier checkpoint (one a gateway holds, in its state directory
as audit-checkpoint, or one saved with 'cordonctl audit checkpoint').

With --bundle, cordonctl verifies an exported bundle on its own, with no
controller: the records, the checkpoint's signature and the proofs.

--key pins the log's public key ('cordonctl audit key'); without it the key
the controller or bundle names is used and printed, to compare.
Exit code 7 when the log or bundle does not verify.`,
		Example: `  cordonctl audit verify
  cordonctl audit verify --checkpoint /var/lib/cordon-gateway/audit-checkpoint
  cordonctl audit verify --bundle audit-2026-12.jsonl --key "$(cat audit-log.pub)"`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var earlier []byte
			if earlierFile != "" {
				b, err := readSmallFile(earlierFile, auditlog.MaxCheckpointSize)
				if err != nil {
					return usagef("--checkpoint: %v", err)
				}
				earlier = b
			}
			if bundle != "" {
				return a.verifyBundle(bundle, key, earlier)
			}
			return a.verifyLog(cmd, key, earlier)
		}),
	}
	verify.Flags().StringVar(&bundle, "bundle", "", "verify this exported bundle offline")
	verify.Flags().StringVar(&earlierFile, "checkpoint", "", "an earlier signed checkpoint the log must extend")
	verify.Flags().StringVar(&key, "key", "", "the log's public key (note verifier key) to require")

	export := &cobra.Command{
		Use:   "export -f FILE [--from SEQ] [--to SEQ]",
		Short: "Write a self-contained bundle of audit records that verifies offline",
		Long: `Writes records seq --from to --to (default: the whole signed log) with the
latest signed checkpoint, the proofs that place them in it and the log's
public key, as JSON lines: the first line the header, then one record per
line exactly as the log hashes it. cordonctl then verifies the file it wrote.
Anyone can verify it again with 'cordonctl audit verify --bundle FILE' on a
machine with no controller.`,
		Example: `  cordonctl audit export -f audit.jsonl
  cordonctl audit export -f q4.jsonl --from 120000 --to 180000`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			if from < 0 || to < 0 || to != 0 && to < max(from, 1) {
				return usagef("--from %d --to %d: want 1 <= from <= to", from, to)
			}
			return a.exportBundle(cmd, file, from, to)
		}),
	}
	export.Flags().StringVarP(&file, "file", "f", "", "the bundle to write (mode 0600: records name people)")
	export.Flags().Int64Var(&from, "from", 0, "first record (seq); default: the first not archived")
	export.Flags().Int64Var(&to, "to", 0, "last record (seq); default: the latest signed")

	checkpoint := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the latest signed checkpoint of the audit log (keep it to check later that the log only grew)",
		Example: `  cordonctl audit checkpoint > checkpoint-$(date +%F).txt
  cordonctl audit verify --checkpoint checkpoint-2026-12-01.txt`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			info, printed, err := a.auditLogInfo(cmd)
			if err != nil || printed {
				return err
			}
			if info.Checkpoint == "" {
				return fmt.Errorf("the audit log has no checkpoint yet (it is signed within seconds of the first record)")
			}
			_, err = io.WriteString(a.io.Out, info.Checkpoint)
			return err
		}),
	}
	keyCmd := &cobra.Command{
		Use:   "key",
		Short: "Print the audit log's public key (pin it: verify --key)",
		Args:  args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			info, printed, err := a.auditLogInfo(cmd)
			if err != nil || printed {
				return err
			}
			_, err = fmt.Fprintln(a.io.Out, info.Key)
			return err
		}),
	}
	return []*cobra.Command{verify, export, checkpoint, keyCmd}
}

// auditLogInfo asks for the log's key and latest checkpoint (printed
// already with -o json).
func (a *app) auditLogInfo(cmd *cobra.Command) (info adminapi.AuditLogInfo, printed bool, err error) {
	printed, err = a.do(cmd, "GET", adminapi.AuditLogPath(0), nil, &info)
	return info, printed, err
}

func (a *app) verifyBundle(path, key string, earlier []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return usagef("--bundle: %v", err)
	}
	defer f.Close()
	res, err := auditlog.VerifyBundle(f, auditlog.VerifyOptions{Key: key, Earlier: earlier})
	if err != nil {
		return notVerified("bundle %s NOT verified: %v", path, err)
	}
	fmt.Fprintln(a.io.Out, res.Describe())
	a.printKey(key, res.Key, "the bundle")
	return nil
}

// printKey says which key was used when none was pinned.
func (a *app) printKey(pinned, used, from string) {
	if pinned == "" {
		fmt.Fprintf(a.io.Out, "key: %s (from %s; compare it with the key you keep, or pin it with --key)\n", used, from)
	}
}

func (a *app) verifyLog(cmd *cobra.Command, key string, earlier []byte) error {
	c, err := a.getClient()
	if err != nil {
		return err
	}
	var rep adminapi.AuditVerifyReport
	if err := c.StreamJSON(cmd.Context(), "/v1/audit/verify", &rep); err != nil {
		return err
	}
	if a.output == "json" {
		defer func() {
			b, _ := json.MarshalIndent(rep, "", "  ")
			fmt.Fprintln(a.io.Out, string(b))
		}()
	}
	var info adminapi.AuditLogInfo
	if err := c.Do(cmd.Context(), "GET", adminapi.AuditLogPath(0), nil, &info); err != nil {
		return err
	}
	used := key
	if used == "" {
		used = info.Key
	} else if info.Key != key {
		return notVerified("log NOT verified: the controller's log key is %s, not the pinned %s: the log or the key was replaced", info.Key, key)
	}
	if !rep.OK {
		var b bytes.Buffer
		fmt.Fprintf(&b, "log NOT verified: %d records, %d checkpoints checked\n", rep.Records, rep.Checkpoints)
		if rep.FirstBad != nil {
			fmt.Fprintf(&b, "first bad record: seq %d: %s\n", rep.FirstBad.Seq, rep.FirstBad.Reason)
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(&b, "  - %s\n", p)
		}
		return notVerified("%s", bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	}
	if rep.Checkpoint == "" {
		fmt.Fprintf(a.io.Out, "log has %d records and no checkpoint yet (the controller signs within seconds)\n", rep.Records)
		return nil
	}
	cp, err := auditlog.OpenCheckpoint([]byte(rep.Checkpoint), used)
	if err != nil {
		return notVerified("log NOT verified: the controller's latest checkpoint: %v", err)
	}
	if a.output != "json" {
		fmt.Fprintf(a.io.Out, "log verified: %d records, tree size %d, checkpoint signed %s by %s (%d checkpoints checked, %.1f s)\n",
			rep.Records, cp.Size, cp.Time.Format(time.RFC3339), cp.Origin, rep.Checkpoints, float64(rep.ElapsedMS)/1000)
		if rep.Unsigned > 0 {
			fmt.Fprintf(a.io.Out, "%d newer records are not signed yet (they match their logged hashes; the controller signs within seconds)\n", rep.Unsigned)
		}
		for _, l := range archivedLines(rep.Archived) {
			fmt.Fprintln(a.io.Out, l)
		}
	}
	if earlier != nil {
		if err := a.checkExtends(cmd, c, used, earlier); err != nil {
			return err
		}
	}
	if a.output != "json" {
		a.printKey(key, used, "the controller")
	}
	return nil
}

// checkExtends checks with a consistency proof that the controller's log
// extends the earlier checkpoint.
func (a *app) checkExtends(cmd *cobra.Command, c *adminapi.Client, key string, earlier []byte) error {
	old, err := auditlog.OpenCheckpoint(earlier, key)
	if err != nil {
		return notVerified("earlier checkpoint: %v", err)
	}
	var info adminapi.AuditLogInfo
	err = c.Do(cmd.Context(), "GET", adminapi.AuditLogPath(old.Size), nil, &info)
	var ae *adminapi.Error
	if errors.As(err, &ae) && ae.Code == adminapi.CodeConflict {
		return notVerified("log NOT verified: it does not extend the earlier checkpoint (%s): %s", old, ae.Message)
	}
	if err != nil {
		return err
	}
	latest, err := auditlog.OpenCheckpoint([]byte(info.Checkpoint), key)
	if err != nil {
		return notVerified("log NOT verified: the controller's latest checkpoint: %v", err)
	}
	if err := auditlog.Consistent(old, latest, info.Proof); err != nil {
		return notVerified("log NOT verified: it does not extend the earlier checkpoint: %v", err)
	}
	if a.output != "json" {
		fmt.Fprintf(a.io.Out, "the log extends the earlier checkpoint of %d records signed %s (consistency proof checked)\n", old.Size, old.Time.Format(time.RFC3339))
	}
	return nil
}

func (a *app) exportBundle(cmd *cobra.Command, path string, from, to int64) error {
	c, err := a.getClient()
	if err != nil {
		return err
	}
	body, err := c.Stream(cmd.Context(), adminapi.AuditExportPath(from, to))
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return usagef("--file: %v", err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write bundle %s: %w", path, err)
	}
	rf, err := os.Open(path)
	if err != nil {
		return err
	}
	defer rf.Close()
	res, err := auditlog.VerifyBundle(rf, auditlog.VerifyOptions{})
	if err != nil {
		return notVerified("bundle %s written, but it does NOT verify: %v\nrun 'cordonctl audit verify' to find the bad record", path, err)
	}
	fmt.Fprintf(a.io.Out, "bundle written: %s\n%s\nverify it anywhere with: cordonctl audit verify --bundle %s --key '%s'\n", path, res.Describe(), path, res.Key)
	return nil
}

// readSmallFile reads a file of at most max bytes.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a checkpoint", path, max)
	}
	return b, nil
}
