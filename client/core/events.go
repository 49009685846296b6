package core

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Events receives what happens in the core. The shell implements it.
// Event is called from one goroutine of the core, one event at a time, in
// order; it should return quickly (hand the event to the UI thread). kind
// is one of the Kind constants; payload is its JSON document. Kinds and
// fields are only ever added: ignore those you do not know.
type Events interface {
	Event(kind string, payload string)
}

// URLOpener opens a URL in the system browser (SignInOIDC). It returns
// once the browser was asked to open it, not when the user is done.
type URLOpener interface {
	OpenURL(url string) error
}

// Event kinds.
const (
	// KindTunnel: the tunnel starts or stops, {"state":"starting|stopped",
	// "mode":"tun|userspace","error":"..."}; an error says why it stopped
	// when the app did not ask (the controller ended the enrollment: sign
	// in again).
	KindTunnel = "tunnel"
	// KindControl: the control channel to the controller went up or
	// down, {"connected":true}. While down the tunnel keeps the last map.
	KindControl = "control"
	// KindSession: the session as the controller describes it, {"id",
	// "state":"active|ended","reason","message","started_at","expires_at",
	// "idle_limit_ns"}; message, when set, is for the user.
	KindSession = "session"
	// KindApps: the apps and, for each, whether it is reachable now and
	// why not: [{"name","dns_name","addr","gateway","reachable",
	// "reason","detail","next"}]; reason is reach's (ok, signed-out,
	// session-ended, not-entitled, control-down, gateway-unreachable,
	// no-answer), detail and next are for the user.
	KindApps = "apps"
	// KindPosture: the posture checks this device fails that an app
	// needs, [{"check","fix","apps"}]; [] when none.
	KindPosture = "posture"
	// KindStepUp: apps that need a fresh sign-in with the second factor
	// (the tunnel stays up; call SignIn again), [{"app","at"}]; [] when
	// none.
	KindStepUp = "step_up"
	// KindNoMFA: after a sign-in without a second factor, the apps that
	// stay closed and how to open them, {"apps":[...],"how":"..."}.
	KindNoMFA = "no_mfa"
	// KindStatus: the whole status, as Status returns it, after every
	// map and every change of the control channel.
	KindStatus = "status"
)

type tunnelEvent struct {
	State string `json:"state"`
	Mode  string `json:"mode"`
	Error string `json:"error,omitempty"`
}

type controlEvent struct {
	Connected bool `json:"connected"`
}

type sessionEvent struct {
	ID        string        `json:"id,omitempty"`
	State     string        `json:"state"`
	Reason    string        `json:"reason,omitempty"`
	Message   string        `json:"message,omitempty"`
	StartedAt time.Time     `json:"started_at,omitzero"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
	IdleLimit time.Duration `json:"idle_limit_ns,omitempty"`
}

type appEvent struct {
	Name      string `json:"name"`
	DNSName   string `json:"dns_name,omitempty"`
	Addr      string `json:"addr"`
	Gateway   string `json:"gateway"`
	Reachable bool   `json:"reachable"`
	Reason    string `json:"reason"`
	Detail    string `json:"detail,omitempty"`
	Next      string `json:"next,omitempty"`
}

// derive splits a status into the events it carries, in the order they
// are sent.
func derive(s client.Status) []event {
	out := []event{{KindControl, controlEvent{Connected: s.ControlConnected}}}
	posture, stepUp := []controlproto.PostureFinding{}, []controlproto.StepUp{}
	if ss := s.Session; ss != nil {
		out = append(out, event{KindSession, sessionEvent{ID: ss.ID, State: ss.State, Reason: ss.Reason, Message: ss.Message,
			StartedAt: ss.StartedAt, ExpiresAt: ss.ExpiresAt, IdleLimit: ss.IdleLimit}})
		if ss.Posture != nil {
			posture = ss.Posture
		}
		if ss.StepUp != nil {
			stepUp = ss.StepUp
		}
	}
	apps := []appEvent{}
	for _, g := range s.Gateways {
		for _, a := range g.Apps {
			apps = append(apps, appEvent{Name: a.Name, DNSName: a.DNSName, Addr: a.Addr.String(), Gateway: g.ID,
				Reachable: a.State.Reason == reach.ReasonOK, Reason: a.State.Reason.String(), Detail: a.State.Detail, Next: a.State.Next})
		}
	}
	if s.Session != nil || len(s.Gateways) > 0 {
		out = append(out, event{KindApps, apps}, event{KindPosture, posture}, event{KindStepUp, stepUp})
	}
	return append(out, event{KindStatus, s})
}

type event struct {
	kind    string
	payload any
}

// dispatcher delivers events from its own goroutine, so the tunnel never
// waits for the shell. Statuses are latest-only (a newer one replaces one
// not yet delivered); the events a status carries are sent only when
// they changed since the last one sent; other events queue.
type dispatcher struct {
	ev   Events
	kick chan struct{} // capacity 1
	done chan struct{} // closed when the goroutine returns
	stop chan struct{}
	once sync.Once

	mu     sync.Mutex
	queue  []event
	latest *client.Status

	last map[string]string // kind → payload last sent; the goroutine's own
}

func newDispatcher(ev Events) *dispatcher {
	d := &dispatcher{ev: ev, kick: make(chan struct{}, 1), done: make(chan struct{}), stop: make(chan struct{}), last: map[string]string{}}
	go d.loop()
	return d
}

// send queues one event.
func (d *dispatcher) send(kind string, payload any) {
	d.mu.Lock()
	d.queue = append(d.queue, event{kind, payload})
	d.mu.Unlock()
	d.wake()
}

// status takes the tunnel's latest status (client.UpConfig.OnStatus).
func (d *dispatcher) status(s client.Status) {
	d.mu.Lock()
	d.latest = &s
	d.mu.Unlock()
	d.wake()
}

func (d *dispatcher) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *dispatcher) loop() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			d.flush() // what was queued before Close still goes out
			return
		case <-d.kick:
		}
		d.flush()
	}
}

func (d *dispatcher) flush() {
	d.mu.Lock()
	q, s := d.queue, d.latest
	d.queue, d.latest = nil, nil
	d.mu.Unlock()
	if s != nil {
		// A status is taken after the events queued before it.
		q = append(q, derive(*s)...)
	}
	for _, e := range q {
		b, err := json.Marshal(e.payload)
		if err != nil {
			continue // our own types: cannot fail
		}
		p := string(b)
		if e.kind != KindStatus && e.kind != KindTunnel && e.kind != KindNoMFA {
			if d.last[e.kind] == p {
				continue
			}
			d.last[e.kind] = p
		}
		if te, ok := e.payload.(tunnelEvent); ok && te.State == "stopped" {
			clear(d.last) // the next run tells everything again
		}
		if d.ev != nil {
			d.ev.Event(e.kind, p)
		}
	}
}

// close stops the goroutine after it delivered what was queued.
func (d *dispatcher) close() {
	d.once.Do(func() { close(d.stop) })
	<-d.done
}
