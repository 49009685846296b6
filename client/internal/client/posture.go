package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	clientposture "github.com/cordonhq/cordon/client/internal/posture"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/posture"
)

// Posture reporting. The device reports its posture each time the control
// connection comes up, then re-collects it every ClientMap.PostureInterval
// and reports it when it changed (and, unchanged, every postureRefresh
// intervals, so the controller knows it is current). Everything in the
// report is self-reported: the controller records it as such.
//
// UpConfig.PostureFile (hidden flag --posture-file, for tests and
// diagnostics) names a JSON report whose fields override the collected
// ones; it is re-read at every collection, so a test can change posture
// live. The controller cannot tell the difference, which is why posture is
// documented and audited as self-reported.

// postureRefresh is how many intervals an unchanged report waits before
// it is sent again.
const postureRefresh = 10

// postureTick is how often the reporter looks at the connection state and
// the clock; collections happen every PostureInterval.
const postureTick = 250 * time.Millisecond

// reportPosture runs until ctx ends.
func (t *tunnel) reportPosture(ctx context.Context) {
	col := clientposture.New(t.cfg.Version)
	tick := time.NewTicker(postureTick)
	defer tick.Stop()
	var (
		wasConnected          bool
		lastDigest            [32]byte
		lastCollect, lastSent time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !t.cc.Connected() {
			wasConnected = false
			continue
		}
		now := time.Now()
		interval := t.postureInterval()
		force := !wasConnected
		if !force && (interval <= 0 || now.Sub(lastCollect) < interval) {
			continue
		}
		wasConnected, lastCollect = true, now
		rep, err := t.collectPosture(ctx, col)
		if err != nil {
			t.log.Warn("posture not reported", "err", err)
			continue
		}
		digest := reportDigest(rep)
		if !force && digest == lastDigest && (interval <= 0 || now.Sub(lastSent) < postureRefresh*interval) {
			continue
		}
		if t.sendPosture(rep) {
			if digest != lastDigest {
				t.log.Info("posture reported", "os", rep.OS, "os_version", rep.OSVersion,
					"disk_encryption", rep.DiskEncryption.State, "firewall", rep.Firewall.State, "screen_lock", rep.ScreenLock.State)
			}
			lastDigest, lastSent = digest, now
		}
	}
}

// postureInterval is the controller's interval from the current map (0:
// none yet).
func (t *tunnel) postureInterval() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cm == nil {
		return 0
	}
	return t.cm.PostureInterval
}

// collectPosture collects the report, applies the override file and
// checks it as the controller will.
func (t *tunnel) collectPosture(ctx context.Context, col *clientposture.Collector) (posture.Report, error) {
	rep := col.Collect(ctx)
	if t.cfg.PostureFacts != nil {
		if b := t.cfg.PostureFacts(); len(b) > 0 {
			if err := overridePostureJSON(&rep, b); err != nil {
				return rep, fmt.Errorf("posture facts from the shell: %w", err)
			}
		}
	}
	if t.cfg.PostureFile != "" {
		if err := overridePosture(&rep, t.cfg.PostureFile); err != nil {
			return rep, err
		}
	}
	if err := rep.Validate(time.Now()); err != nil {
		return rep, err
	}
	return rep, nil
}

// overridePosture replaces the fields of rep that the JSON report in file
// sets (overridePostureJSON).
func overridePosture(rep *posture.Report, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("posture file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, posture.MaxSize+1))
	if err != nil {
		return fmt.Errorf("posture file %s: %w", file, err)
	}
	if err := overridePostureJSON(rep, b); err != nil {
		return fmt.Errorf("posture file %s: %w", file, err)
	}
	return nil
}

// overridePostureJSON replaces the fields of rep that the JSON report b
// sets (a check given there replaces the collected check whole). Unknown
// fields are an error.
func overridePostureJSON(rep *posture.Report, b []byte) error {
	if len(b) > posture.MaxSize {
		return fmt.Errorf("larger than %d bytes", posture.MaxSize)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for k, c := range map[string]*posture.Check{
		"disk_encryption": &rep.DiskEncryption, "firewall": &rep.Firewall,
		"screen_lock": &rep.ScreenLock, "integrity": &rep.Integrity,
	} {
		if _, ok := keys[k]; ok {
			*c = posture.Check{}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(rep)
}

// CheckPostureFacts checks posture facts a shell gives (UpConfig.PostureFacts)
// as the tunnel will apply them: JSON of the report's fields, no others,
// each value one the controller accepts. now is the time of the check.
func CheckPostureFacts(b []byte, now time.Time) error {
	rep := posture.Report{CollectedAt: now, DiskEncryption: posture.Check{State: posture.Unknown},
		Firewall: posture.Check{State: posture.Unknown}, ScreenLock: posture.Check{State: posture.Unknown}}
	if err := overridePostureJSON(&rep, b); err != nil {
		return fmt.Errorf("posture facts: %w", err)
	}
	if !rep.CollectedAt.Equal(now) {
		return errors.New("posture facts: collected_at is not a fact: the client stamps each report when it collects it")
	}
	if err := rep.Validate(now); err != nil {
		return fmt.Errorf("posture facts: %w", err)
	}
	return nil
}

// reportDigest identifies a report's content apart from when it was
// collected.
func reportDigest(r posture.Report) [32]byte {
	r.CollectedAt = time.Time{}
	b, _ := json.Marshal(r) // strings only: cannot fail
	return sha256.Sum256(b)
}

// sendPosture queues the report for the controller.
func (t *tunnel) sendPosture(r posture.Report) bool {
	b, err := json.Marshal(r)
	if err != nil {
		return false
	}
	return t.cc.Send(&controlproto.Frame{Type: controlproto.TypePosture, Posture: &controlproto.PostureReport{Report: b}})
}
