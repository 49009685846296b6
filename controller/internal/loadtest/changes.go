//go:build loadtest

package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Change kinds (-changes).
const (
	changeAddMember    = "add-member"    // one user joins a second department
	changeRemoveMember = "remove-member" // and leaves it again
	changeGrantAll     = "grant-all"     // a rule gives group "all" a spare app
	changeRevokeAll    = "revoke-all"    // and is deleted again
)

var changeKinds = []string{changeAddMember, changeRemoveMember, changeGrantAll, changeRevokeAll}

// world is the running scenario a change acts on.
type world struct {
	sc      scenario
	api     *adminapi.Client
	gateway *simAgent
	clients []*simAgent
	fleet   *fleet
	cpu     *sampler

	// State of the script: which user is in an extra department, which
	// spare app is granted to everyone.
	extraUser, extraDept int
	granted              int
	nextUser, nextSpare  int
}

// changeResult is one change's figures.
type changeResult struct {
	kind      string
	affected  int
	acked     int
	latencies []time.Duration // per acknowledging agent, from commit
	bytes     int64
	frames    int64
	cpu       time.Duration // controller CPU from the call to the last frame
	apiTime   time.Duration // how long the API call took
	timedOut  bool
	err       error
}

// runChange makes one change and measures it. It waits, within deadline,
// until every affected agent received a map showing it, then until the
// controller has sent nothing for quiet, so the next change starts clean.
func (w *world) runChange(ctx context.Context, kind string, deadline, quiet time.Duration) changeResult {
	res := changeResult{kind: kind}
	call, targets, err := w.plan(kind)
	if err != nil {
		res.err = err
		return res
	}
	res.affected = len(targets)
	exp := newExpectation(len(targets))
	for i, t := range targets {
		t.agent.expect(&wanted{exp: exp, slot: i, match: t.match})
	}
	defer func() {
		for _, t := range targets {
			t.agent.expect(nil)
		}
	}()
	bytes0, frames0 := w.fleet.bytes.Load(), w.fleet.frames.Load()
	start := time.Now()
	w.cpu.sample()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = call(cctx)
	cancel()
	commit := time.Now()
	res.apiTime = commit.Sub(start)
	if err != nil {
		res.err = fmt.Errorf("%s: %w", kind, err)
		return res
	}
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-exp.done:
	case <-timer.C:
		res.timedOut = true
	case <-ctx.Done():
		res.err = ctx.Err()
		return res
	}
	for i := range exp.got {
		if at := exp.got[i].Load(); at != 0 {
			res.acked++
			res.latencies = append(res.latencies, max(0, time.Unix(0, at).Sub(commit)))
		}
	}
	slices.Sort(res.latencies)
	waitQuiet(ctx, w.fleet, quiet, 2*time.Minute)
	last := time.Unix(0, w.fleet.lastFrame.Load())
	if last.Before(start) {
		last = commit
	}
	w.cpu.sample()
	res.cpu = w.cpu.between(start, last.Add(50*time.Millisecond))
	res.bytes, res.frames = w.fleet.bytes.Load()-bytes0, w.fleet.frames.Load()-frames0
	return res
}

// waitQuiet returns once no agent received a frame for quiet (or after
// limit).
func waitQuiet(ctx context.Context, f *fleet, quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		if time.Since(time.Unix(0, f.lastFrame.Load())) >= quiet {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type target struct {
	agent *simAgent
	match func(*controlproto.Frame) bool
}

// plan returns the API call of a change and the agents it must reach,
// each with the test a map must pass to show the change.
func (w *world) plan(kind string) (func(context.Context) error, []target, error) {
	switch kind {
	case changeAddMember, changeRemoveMember:
		add := kind == changeAddMember
		if add {
			if w.extraUser >= 0 {
				return nil, nil, fmt.Errorf("%s: user %s is still in an extra department; the script must remove it first", kind, userName(w.extraUser))
			}
			w.extraUser = w.nextUser % w.sc.devices
			w.nextUser += 7919 // a prime: spreads over users and departments
			w.extraDept = (w.extraUser%w.sc.depts + 1) % w.sc.depts
		} else if w.extraUser < 0 {
			return nil, nil, fmt.Errorf("%s: no user in an extra department; the script must add one first", kind)
		}
		u, d := w.extraUser, w.extraDept
		app := deptApp(d, 0)
		rule := policy.RuleID(ruleFor(app))
		dev := deviceID(u)
		call := func(ctx context.Context) error {
			_, err := w.api.AddMember(ctx, deptGroup(d), userName(u))
			return err
		}
		if !add {
			call = func(ctx context.Context) error { return w.api.RemoveMember(ctx, deptGroup(d), userName(u)) }
			w.extraUser = -1
		}
		return call, []target{
			{w.clients[u], func(f *controlproto.Frame) bool { return clientHasApp(f, app) == add }},
			{w.gateway, func(f *controlproto.Frame) bool {
				has, ok := peerHasRule(f, dev, rule)
				return ok && has == add
			}},
		}, nil
	case changeGrantAll, changeRevokeAll:
		grant := kind == changeGrantAll
		if grant {
			if w.granted >= 0 {
				return nil, nil, fmt.Errorf("%s: %s is still granted; the script must revoke it first", kind, spareApp(w.granted))
			}
			w.granted = w.nextSpare % w.sc.spare
			w.nextSpare++
		} else if w.granted < 0 {
			return nil, nil, fmt.Errorf("%s: nothing granted; the script must grant first", kind)
		}
		app := spareApp(w.granted)
		rule := ruleFor(app)
		call := func(ctx context.Context) error {
			_, err := w.api.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: rule, Group: groupAll, App: app})
			return err
		}
		if !grant {
			call = func(ctx context.Context) error { return w.api.DeleteRule(ctx, rule) }
			w.granted = -1
		}
		targets := make([]target, 0, len(w.clients)+1)
		targets = append(targets, target{w.gateway, func(f *controlproto.Frame) bool {
			return f.GatewayMap != nil && gatewayHasRule(f.GatewayMap, policy.RuleID(rule)) == grant
		}})
		for _, c := range w.clients {
			targets = append(targets, target{c, func(f *controlproto.Frame) bool { return clientHasApp(f, app) == grant }})
		}
		return call, targets, nil
	}
	return nil, nil, fmt.Errorf("unknown change %q (want one of %v)", kind, changeKinds)
}

// clientHasApp reports whether a client map routes app; false for any
// other frame.
func clientHasApp(f *controlproto.Frame, app string) bool {
	if f.ClientMap == nil {
		return false
	}
	// Since capability 10 apps are listed per segment (Segments), which
	// Legacy resolves into the per-gateway shape this reads.
	for _, g := range f.ClientMap.Legacy().Gateways {
		for _, a := range g.Apps {
			if a.Name == app {
				return true
			}
		}
	}
	return false
}

// peerHasRule reports whether a gateway map gives device dev rule r; ok is
// false when f is no gateway map or dev is not among its peers.
func peerHasRule(f *controlproto.Frame, dev string, r policy.RuleID) (has, ok bool) {
	if f.GatewayMap == nil {
		return false, false
	}
	i, found := slices.BinarySearchFunc(f.GatewayMap.Peers, dev, func(p controlproto.GatewayPeer, id string) int {
		switch {
		case p.DeviceID < id:
			return -1
		case p.DeviceID > id:
			return 1
		}
		return 0
	})
	if !found {
		// Peers are sorted by device ID today; do not rely on it.
		i = slices.IndexFunc(f.GatewayMap.Peers, func(p controlproto.GatewayPeer) bool { return p.DeviceID == dev })
		if i < 0 {
			return false, false
		}
	}
	return slices.Contains(f.GatewayMap.Peers[i].Rules, r), true
}

func gatewayHasRule(m *controlproto.GatewayMap, r policy.RuleID) bool {
	return slices.ContainsFunc(m.Rules, func(x policy.Rule) bool { return x.ID == r })
}
