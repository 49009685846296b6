// Package controlproto defines the control protocol between the controller
// and its agents (gateways and clients), and the enrollment/login bodies that
// precede it.
//
// Transport: one QUIC connection per agent (TLS 1.3, mutual authentication:
// the agent presents the certificate the controller issued at enrollment; its
// CommonName is the agent's ID). The agent opens one bidirectional stream and
// sends [Hello]; the controller answers with [Frame]s carrying a whole desired
// [GatewayMap] or [ClientMap] each time it changes, or, to agents of
// capability 6, a [GatewayMapDelta] or [ClientMapDelta] from the map the
// agent last got (delta.go); agents apply the difference declaratively and
// acknowledge each map's revision ([Ack]). The agent sends [FlowEvents] up
// the same stream. Every frame is a 4-byte big-endian length followed by that many
// bytes of JSON, at most [MaxFrameSize].
package controlproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
	"golang.org/x/mod/sumdb/tlog"
)

// Control channel timers. Agents send a keep-alive every KeepAlive (a
// ping frame, to controllers of capability 7; QUIC PING packets at
// IdleTimeout/2 to older ones); the controller sends none. A connection silent for IdleTimeout is closed by
// either end. (25 s and 60 s, as WireGuard's keep-alive, were tried: the
// idle controller's CPU at 10,000 agents did not fall measurably, and
// under datagram loss in a connect storm fewer pings meant more idle
// timeouts; see docs/benchmarks.md.)
const (
	KeepAlive   = 10 * time.Second
	IdleTimeout = 30 * time.Second
)

// CapabilityVersion is the protocol version an agent speaks. Only add
// fields; never reuse one. History:
//
//	1 (2026-11-22): walking skeleton: hello, whole maps, flow events, and
//	  acks: a gateway acknowledges each map once applied, so the controller
//	  pushes clients' maps only after the gateways they need are ready.
//	2 (2026-11-22): split-horizon DNS: DNSZones in both maps, App.DNSAliases,
//	  dns-deny flow events carrying FlowEvent.Name.
//	3 (2026-11-22): GatewayPeer.Session (policy.Peer.Session): each peer's
//	  MFA time, public address and groups, so gateways evaluate time
//	  windows, MFA age and source networks on every flow and recheck open
//	  flows as time passes.
//	4 (2026-11-23): sessions and device trust: gateways report per-device
//	  activity (Activity, at GatewayMap.ActivityInterval) for the idle
//	  limit; ClientMap.Session tells the device its session state, step-up
//	  and posture findings; clients report posture (PostureReport); agents
//	  renew their certificate before it expires (Renew → Certificate).
//	5 (2026-12-03): gateway restarts: a gateway names its process run in
//	  Hello.Instance; ClientGateway.Instance carries it to clients, which
//	  start a fresh WireGuard handshake with a gateway whose instance
//	  changed instead of waiting for WireGuard's own timers. Fail static,
//	  fail closed: GatewayMap.GrantLifetime (how long a gateway may serve
//	  a map after it last heard from the controller) and
//	  GatewayPeer.ExpiresAt (the session's absolute limit, which the
//	  gateway enforces itself).
//	6 (2026-12-03): deltas on the wire: the controller may send an agent
//	  of this capability a GatewayMapDelta or ClientMapDelta (frame types
//	  gateway_map_delta, client_map_delta) from the revision the agent
//	  last got instead of the whole map; it still sends the whole map on
//	  connect, after an error ack and when a delta would not be smaller.
//	  An agent that cannot apply a delta (revision gap, delta that does
//	  not fit) acks its To revision with Ack.Resync and gets the whole
//	  map. Agents of capability 1 to 5 keep getting whole maps.
//	7 (2026-12-03): agents keep the connection alive with a ping frame
//	  every KeepAlive instead of QUIC PING packets. A QUIC PING packet is
//	  too small for a restarted controller to answer with a stateless
//	  reset (quic-go answers only packets longer than a reset, 42 bytes),
//	  so agents of a controller that was killed waited out IdleTimeout; a
//	  ping frame's packet is at least 44 bytes and is answered. The
//	  controller ignores pings; older controllers count them as unexpected
//	  frames.
//	8 (2026-12-03): audit log checkpoints leave the controller: it sends
//	  gateways of this capability each signed checkpoint of its audit log
//	  (audit_checkpoint, AuditCheckpoint) with the consistency proof from
//	  the one the gateway holds (Hello.AuditLogSize on connect, then the
//	  last one sent). A gateway keeps the latest it accepted and refuses
//	  one that does not extend it, and says so (audit_alert, AuditAlert).
//	9 (2026-12-03): a client gateway patch may carry its AllowedIPs as
//	  the prefixes added and removed (ClientGatewayPatch.AllowedIPsDelta)
//	  instead of the whole list: a new app for everyone made every
//	  client's delta two packets instead of one.
//	10 (2026-12-03): every gateway of a segment: a client of this
//	  capability gets ClientMap.Segments, each segment's apps, AllowedIPs
//	  and all of its gateways in this device's order of preference
//	  (rendezvous hashing, gateways the controller knows to be down last,
//	  ClientGateway.Down), and ClientMap.Gateways lists every one of those
//	  gateways with only its overlay address routed: the client routes a
//	  segment through the first live gateway of its list and moves it to
//	  the next when that one dies (ClientMap.Resolve). Clients of
//	  capability 1 to 9 get the old shape: each segment on the first
//	  gateway of its list only (ClientMap.Legacy).
//	11 (2026-12-03): complete, durable flow records: gateways spool flow
//	  events to disk and number them (FlowEvent.Seq, per FlowEvents.SpoolID);
//	  a controller of this capability commits each batch with the highest
//	  number it holds and answers flow_ack (FlowAck), and the gateway
//	  keeps every event until acknowledged and resends the rest on
//	  reconnect. Flow end records (action "end": packets and bytes each
//	  way, duration, end reason). FlowEvents.SentAt (the gateway's clock,
//	  for skew alerts) and FlowEvents.Spool (the spool's state: full or
//	  not); gateways send a batch, empty if need be, at least every
//	  FlowHeartbeat. Gateways of a controller below 11 send their events
//	  once, unnumbered, as before, and drop them from the spool when sent.
//	12 (2026-12-04): gateway clusters (cluster.go): a gateway says where it
//	  gossips (Hello.ClusterAddr); the controller sends gateways of this
//	  capability their cluster (GatewayMap.Cluster: gossip keys by epoch,
//	  members with their addresses and certificate keys) and signed
//	  revocation notices (revocation, Revocation) to gossip; gateways
//	  report the members they see dead (Activity.Cluster).
//	13 (2026-12-04): a TCP path for UDP-blocked networks: a gateway that
//	  accepts WireGuard over TLS (package wgstream) says where in
//	  Hello.TCPEndpoint; the controller passes it to clients in
//	  ClientGateway.TCPEndpoint (and ClientGatewayPatch.TCPEndpoint). A
//	  client of this capability tries UDP first and carries its packets
//	  over that stream when UDP gets no answer. Older agents ignore both
//	  fields; an older controller sends none, and clients stay on UDP.
//	14 (2026-12-04): gateway drain: ClientGateway.Draining marks a gateway
//	  an admin drains (cordonctl gateway drain), ordered after the live
//	  ones; a client of this capability moves a segment off it the first
//	  moment it has no connection open into the segment, so no request
//	  fails. GatewayMap.Draining tells the gateway: it keeps only the
//	  peers with open flows and lets them go as their flows end (all after
//	  DrainGrace). Clients of capability 10 to 13 see a draining gateway
//	  as Down.
const CapabilityVersion = 14

// MinDrainCapability is the lowest client capability that understands
// ClientGateway.Draining (older ones get a draining gateway as Down).
const MinDrainCapability = 14

// Drain timing (capability 14). A draining gateway keeps every peer for
// DrainSettle (clients get the same map at about the same time and move
// at their next quiet moment), then only peers with open flows; at
// DrainGrace it drops the rest, cutting connections still open.
const (
	DrainSettle = 10 * time.Second
	DrainGrace  = 2 * time.Minute
)

// MinGatewayListCapability is the lowest client capability that gets
// every gateway of a segment (ClientMap.Segments).
const MinGatewayListCapability = 10

// MinFlowAckCapability is the lowest controller capability that
// acknowledges numbered flow events.
const MinFlowAckCapability = 11

// FlowHeartbeat is the longest a gateway of capability 11 goes without a
// flow_events frame (an empty one carries its clock and spool state).
const FlowHeartbeat = 30 * time.Second

// MinAuditCheckpointCapability is the lowest gateway capability that gets
// audit log checkpoints.
const MinAuditCheckpointCapability = 8

// MinDeltaCapability is the lowest capability that gets deltas.
const MinDeltaCapability = 6

// MinPingCapability is the lowest controller capability that takes ping
// frames.
const MinPingCapability = 7

// ALPN is the TLS application protocol of the control channel.
const ALPN = "cordon-control/1"

// MaxFrameSize bounds one control frame, checked before it is read.
const MaxFrameSize = 64 << 20

// AgentKind says what kind of agent is on the other end.
type AgentKind string

// Agent kinds.
const (
	KindGateway AgentKind = "gateway"
	KindClient  AgentKind = "client"
)

// Frame types.
const (
	TypeHello      = "hello"
	TypeGatewayMap = "gateway_map"
	TypeClientMap  = "client_map"
	TypeFlowEvents = "flow_events"
	TypeAck        = "ack"
	TypeError      = "error"
	// Capability 4.
	TypeActivity    = "activity"    // gateway → controller
	TypePosture     = "posture"     // client → controller
	TypeRenew       = "renew"       // agent → controller
	TypeCertificate = "certificate" // controller → agent
	// Capability 6.
	TypeGatewayDelta = "gateway_map_delta" // controller → gateway
	TypeClientDelta  = "client_map_delta"  // controller → client
	// Capability 7.
	TypePing = "ping" // agent → controller, no payload
	// Capability 8.
	TypeAuditCheckpoint = "audit_checkpoint" // controller → gateway
	TypeAuditAlert      = "audit_alert"      // gateway → controller
	// Capability 11.
	TypeFlowAck = "flow_ack" // controller → gateway
	// Capability 12: TypeRevocation (cluster.go).
)

// Frame is the envelope of every message on the control stream. Exactly one
// payload field is set, the one Type names.
type Frame struct {
	Type       string      `json:"type"`
	Hello      *Hello      `json:"hello,omitempty"`
	GatewayMap *GatewayMap `json:"gateway_map,omitempty"`
	ClientMap  *ClientMap  `json:"client_map,omitempty"`
	FlowEvents *FlowEvents `json:"flow_events,omitempty"`
	Ack        *Ack        `json:"ack,omitempty"`
	Error      string      `json:"error,omitempty"`
	// Capability 4.
	Activity    *Activity      `json:"activity,omitempty"`
	Posture     *PostureReport `json:"posture,omitempty"`
	Renew       *Renew         `json:"renew,omitempty"`
	Certificate *Certificate   `json:"certificate,omitempty"`
	// Capability 6.
	GatewayDelta *GatewayMapDelta `json:"gateway_map_delta,omitempty"`
	ClientDelta  *ClientMapDelta  `json:"client_map_delta,omitempty"`
	// Capability 7: the sender's capability version, which the controller
	// sets on whole maps (not a payload).
	Capability int `json:"capability,omitempty"`
	// Capability 8.
	AuditCheckpoint *AuditCheckpoint `json:"audit_checkpoint,omitempty"`
	AuditAlert      *AuditAlert      `json:"audit_alert,omitempty"`
	// Capability 11.
	FlowAck *FlowAck `json:"flow_ack,omitempty"`
	// Capability 12.
	Revocation *Revocation `json:"revocation,omitempty"`
}

// FlowAck tells a gateway that the controller committed its flow events up
// to Seq of spool SpoolID: it may delete them.
type FlowAck struct {
	SpoolID string `json:"spool_id"`
	Seq     uint64 `json:"seq"`
}

// SpoolStatus is the state of a gateway's flow event spool.
type SpoolStatus struct {
	Full      bool   `json:"full,omitempty"`       // no room: new events are dropped (and new flows refused per Policy)
	FullCount uint64 `json:"full_count,omitempty"` // times it became full since the gateway started
	Bytes     int64  `json:"bytes"`
	MaxBytes  int64  `json:"max_bytes"`
	// Lost counts events the gateway could not spool since it started
	// (spool full, or its in-memory queue full); Refused counts new
	// flows refused because the spool was full.
	Lost    uint64 `json:"lost,omitempty"`
	Refused uint64 `json:"refused,omitempty"`
	// Policy is what the gateway does with new flows while full:
	// "fail-closed-phi", "fail-closed" or "fail-open".
	Policy string `json:"policy,omitempty"`
	// Torn counts torn tails dropped when the spool was opened (a crash
	// in the middle of a write: the records in it were never acknowledged
	// to the data path).
	Torn uint64 `json:"torn,omitempty"`
}

// AuditCheckpoint is a signed checkpoint of the controller's audit log
// (pkg/auditlog) and the proof that it extends the one the gateway holds.
type AuditCheckpoint struct {
	Key        string `json:"key"`        // the log's verifier key (note encoding)
	Checkpoint string `json:"checkpoint"` // the signed checkpoint
	// Since is the size of the checkpoint the proof starts from: the one
	// the controller believes the gateway holds (0: none, no proof).
	Since int64          `json:"since,omitempty"`
	Proof tlog.TreeProof `json:"proof,omitempty"`
}

// AuditAlert is a gateway's report that it refused a checkpoint: it does
// not extend the one the gateway holds (a rolled-back, truncated or forked
// log), or is not signed by the key the gateway pinned. The gateway keeps
// its own; the controller records audit.log.inconsistent.
type AuditAlert struct {
	Held   string `json:"held"`   // the checkpoint the gateway holds (signed note)
	Got    string `json:"got"`    // the one it refused
	Reason string `json:"reason"` // why, in words
}

// Activity is a gateway's report of which devices sent traffic to apps
// lately, for the session idle limit (automatic logoff). Ages, not
// timestamps, so the gateway's clock does not matter: the controller
// subtracts each age from the time it received the report.
type Activity struct {
	Devices []DeviceActivity `json:"devices"`
	// Load is the gateway's load now, for 'cordonctl gateway list'
	// (optional: older gateways send none, older controllers ignore it).
	Load *GatewayLoad `json:"load,omitempty"`
	// Cluster (capability 12) is every other member of the gateway's
	// cluster with its state as this gateway sees it, sent when one
	// changed and with each load report.
	Cluster []ClusterMemberState `json:"cluster,omitempty"`
}

// GatewayLoad is how busy a gateway is.
type GatewayLoad struct {
	Peers int `json:"peers"` // WireGuard peers configured (entitled devices)
	Flows int `json:"flows"` // flows in its connection table
}

// DeviceActivity is how long ago a device last sent a packet of an app
// flow through the gateway (DNS lookups and keepalives do not count).
type DeviceActivity struct {
	DeviceID string        `json:"device_id"`
	Idle     time.Duration `json:"idle_ns"`
}

// PostureReport carries the device's self-reported posture, as JSON that
// the controller decodes strictly with posture.Decode.
type PostureReport struct {
	Report json.RawMessage `json:"report"`
}

// Renew asks the controller for a new certificate for the agent's own key
// (a CSR in PEM), sent when the current one nears expiry.
type Renew struct {
	CSR string `json:"csr"`
}

// Certificate is a renewed agent certificate (PEM), or why renewal failed.
type Certificate struct {
	Certificate string `json:"certificate,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Ack tells the controller that the agent applied the map of this revision
// (or rejected it: Error is then set and the agent kept its previous map).
// For a delta, Revision is its To.
type Ack struct {
	Revision uint64 `json:"revision"`
	Error    string `json:"error,omitempty"`
	// Resync (capability 6) says the agent could not apply a delta because
	// it does not hold the map the delta starts from (ErrRevisionGap) or
	// the delta does not fit it (ErrBadDelta): it kept its previous map and
	// needs the whole current one. Error says why.
	Resync bool `json:"resync,omitempty"`
}

// Hello is the first frame an agent sends.
type Hello struct {
	Kind              AgentKind `json:"kind"`
	CapabilityVersion int       `json:"capability_version"`
	AgentVersion      string    `json:"agent_version"`
	// Endpoint is where a gateway accepts WireGuard (host:port), as clients
	// should dial it. Empty for clients.
	Endpoint string `json:"endpoint,omitempty"`
	// Instance names this run of the agent's process (capability 5): new
	// on every start, the same across reconnects of one run. Gateways send
	// it; empty from older agents.
	Instance InstanceID `json:"instance,omitempty"`
	// AuditLogSize is the size of the audit log checkpoint a gateway holds
	// (capability 8; 0: none), where the first checkpoint's proof starts.
	AuditLogSize int64 `json:"audit_log_size,omitempty"`
	// ClusterAddr is where a gateway gossips with its cluster
	// (capability 12; invalid: it joins no cluster).
	ClusterAddr netip.AddrPort `json:"cluster_addr,omitzero"`
	// TCPEndpoint is where a gateway accepts WireGuard over TLS on TCP
	// (host:port, as clients should dial it; capability 13). Empty: no
	// TCP path.
	TCPEndpoint string `json:"tcp_endpoint,omitempty"`
}

// GatewayMap is everything a gateway needs: its own overlay address, the
// client devices it serves and the rules it enforces.
type GatewayMap struct {
	Revision    uint64        `json:"revision"`
	GatewayID   string        `json:"gateway_id"`
	OverlayAddr netip.Addr    `json:"overlay_addr"`
	Segments    []Segment     `json:"segments"`
	Peers       []GatewayPeer `json:"peers"`
	Rules       []policy.Rule `json:"rules"`
	Apps        []App         `json:"apps"`
	// DNSZones are the internal zones: the gateway's DNS server answers
	// names in them (hiding the ones the asker may not reach) and refuses
	// every other name.
	DNSZones []DNSZone `json:"dns_zones,omitempty"`
	// ActivityInterval is how often the gateway reports device activity
	// (Activity frames); zero: do not report.
	ActivityInterval time.Duration `json:"activity_interval_ns,omitempty"`
	// GrantLifetime is how long the gateway may go on serving this map
	// (also from disk, across its own restarts) after it last heard from
	// the controller; past it the gateway admits nobody until the
	// controller is back. Zero (controllers before capability 5):
	// DefaultGrantLifetime.
	GrantLifetime time.Duration `json:"grant_lifetime_ns,omitempty"`
	// PolicyVersion is the controller's policy version the map was
	// computed from (capability 11; 0: none, or an older controller),
	// which the gateway's flow records carry.
	PolicyVersion int64 `json:"policy_version,omitempty"`
	// Cluster is the gateway's cluster (capability 12; nil: it joins
	// none).
	Cluster *GatewayCluster `json:"cluster,omitempty"`
	// Draining (capability 14) says an admin drains this gateway: it lets
	// its peers go as their flows end (DrainSettle, DrainGrace).
	Draining bool `json:"draining,omitempty"`
}

// DefaultGrantLifetime is the grant lifetime of a map that names none.
const DefaultGrantLifetime = 4 * time.Hour

// DNSZone is an internal DNS zone, forward ("hosp.internal.") or reverse
// ("0.20.10.in-addr.arpa."). Every agent gets every zone, so a name in a
// zone is handled the same way whoever asks.
type DNSZone struct {
	Name string `json:"name"` // fully qualified, lower case
	TTL  uint32 `json:"ttl"`  // seconds, positive and negative answers
}

// GatewayPeer is a client device as the gateway sees it.
type GatewayPeer struct {
	policy.Peer
	PublicKey wgkey.Public `json:"public_key"`
	// ExpiresAt is when the device's session reaches its absolute limit:
	// the gateway stops admitting the device then, whether or not it still
	// hears from the controller. Zero: no session limit (sessions off).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// SessionID is the device's session (capability 11), which the
	// gateway's flow records carry. Empty: sessions off, or an older
	// controller.
	SessionID string `json:"session_id,omitempty"`
}

// Segment is a set of real prefixes behind gateways.
type Segment struct {
	Name  string         `json:"name"`
	CIDRs []netip.Prefix `json:"cidrs"`
}

// App is an application a device may reach.
type App struct {
	Name    string             `json:"name"`
	DNSName string             `json:"dns_name"`
	Addr    netip.Prefix       `json:"addr"`
	Proto   policy.Proto       `json:"proto"`
	Ports   []policy.PortRange `json:"ports"`
	Segment string             `json:"segment"`
	// DNSAliases are further names of the app, served as CNAMEs to
	// DNSName to the devices that may reach the app.
	DNSAliases []string `json:"dns_aliases,omitempty"`
	// Classification is the app's data classification, "phi",
	// "internal" or "public" (capability 11; empty from older
	// controllers: the gateway then treats the app as phi).
	Classification string `json:"classification,omitempty"`
}

// ClientMap is everything a client device needs: which gateways to peer
// with and which app addresses to route through each.
type ClientMap struct {
	Revision    uint64          `json:"revision"`
	DeviceID    string          `json:"device_id"`
	User        string          `json:"user"`
	OverlayAddr netip.Addr      `json:"overlay_addr"`
	Gateways    []ClientGateway `json:"gateways"`
	// DNSZones are the internal zones. The client's stub sends queries for
	// them through the tunnel, to the gateway serving the name, and never
	// to the system resolver.
	DNSZones []DNSZone `json:"dns_zones,omitempty"`
	// Session is the device's session as the controller sees it; nil from
	// controllers before capability 4.
	Session *SessionInfo `json:"session,omitempty"`
	// PostureInterval is how often the client re-collects its posture and
	// reports it when it changed (it always reports on connect); zero: only
	// on connect.
	PostureInterval time.Duration `json:"posture_interval_ns,omitempty"`
	// Segments (capability 10) are the segments the device may reach, by
	// name, each with its apps and every gateway serving it in order of
	// preference. When set, Gateways route only their own overlay
	// addresses and carry no apps: the client puts each segment on one of
	// its gateways (Resolve).
	Segments []ClientSegment `json:"segments,omitempty"`
}

// ClientSegment is one segment a device may reach (capability 10).
type ClientSegment struct {
	Name string `json:"name"`
	// Gateways are the IDs of the gateways serving the segment (each in
	// ClientMap.Gateways), this device's preferred one first: ranked by
	// rendezvous hashing of device and gateway, so devices spread evenly
	// and only a joining or leaving gateway's devices move; gateways the
	// controller knows to be down (ClientGateway.Down) come last.
	Gateways []string `json:"gateways"`
	// AllowedIPs are the entitled apps' prefixes, routed through whichever
	// gateway of the segment the client uses.
	AllowedIPs []netip.Prefix `json:"allowed_ips"`
	Apps       []App          `json:"apps"`
}

// Session states.
const (
	SessionActive = "active"
	SessionEnded  = "ended" // the device must sign in again (Reason says why)
	SessionNone   = "none"  // the device never signed in since sessions existed
)

// ReasonQuarantined is the Reason of a SessionEnded state sent to a
// quarantined device: an admin isolated it (cordonctl device quarantine),
// signing in again does not help, and Message says why and whom to
// contact. The device keeps its control channel (and its posture
// reports); the state turns active again when the admin releases it.
// Clients of any capability show Message, so this needs no capability.
const ReasonQuarantined = "quarantined"

// QuarantineMessage is what the user of a device quarantined for reason
// is told (SessionInfo.Message, and a refused sign-in with its key).
func QuarantineMessage(reason string) string {
	return "quarantined by your IT security team: " + reason +
		"; it reaches no app until they release it, and signing in again does not change that: contact your IT service desk"
}

// SessionInfo is what the device is told about its session, for the user:
// when it ends, why it ended, which apps need a fresh second factor and
// which posture checks it fails (and what to do about each).
type SessionInfo struct {
	ID        string    `json:"id,omitempty"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`  // why it ended: idle, absolute, admin, user-disabled, replaced, ...
	Message   string    `json:"message,omitempty"` // for the user: what happened and what to do
	StartedAt time.Time `json:"started_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // the absolute limit
	// IdleLimit is the shortest idle limit that applies to an app the
	// device may reach (automatic logoff).
	IdleLimit time.Duration `json:"idle_limit_ns,omitempty"`
	MFAAt     time.Time     `json:"mfa_at,omitzero"`
	// StepUp lists apps the device was refused because its last MFA is too
	// old (or missing): the user signs in again to reach them.
	StepUp []StepUp `json:"step_up,omitempty"`
	// Posture lists the policy's posture checks this device fails, with
	// what to fix, for the apps that require them.
	Posture []PostureFinding `json:"posture,omitempty"`
	// NoMFA is set while the session's sign-in proved no second factor and
	// the policy has apps the user reaches only with one.
	NoMFA *NoMFA `json:"no_mfa,omitempty"`
}

// NoMFA tells a user whose sign-in proved no second factor (an IdP that
// reported none: no amr or acr showing one) which apps stay closed and how
// to open them.
type NoMFA struct {
	Apps []string `json:"apps"` // sorted
	How  string   `json:"how"`  // what to do, for the user
}

// StepUp is one app that needs a fresher second factor.
type StepUp struct {
	App       string        `json:"app"`
	MaxMFAAge time.Duration `json:"max_mfa_age_ns,omitempty"` // 0: any MFA in this session
	At        time.Time     `json:"at"`                       // when the gateway refused a flow for it
}

// PostureFinding is one posture check the device fails.
type PostureFinding struct {
	Check string   `json:"check"`
	Fix   string   `json:"fix"`            // what the user (or IT) should do
	Apps  []string `json:"apps,omitempty"` // apps that require the check
}

// ClientGateway is one gateway a device peers with. AllowedIPs holds only
// the addresses of apps the device is entitled to (and the gateway's own
// overlay address).
type ClientGateway struct {
	GatewayID   string         `json:"gateway_id"`
	PublicKey   wgkey.Public   `json:"public_key"`
	Endpoint    string         `json:"endpoint"`
	OverlayAddr netip.Addr     `json:"overlay_addr"`
	AllowedIPs  []netip.Prefix `json:"allowed_ips"`
	Apps        []App          `json:"apps"`
	// Instance is the run of the gateway process the controller last heard
	// from (its Hello.Instance; capability 5); empty when unknown. When it
	// changes, the gateway restarted and lost its WireGuard sessions: the
	// client handshakes again at once.
	Instance InstanceID `json:"instance,omitempty"`
	// Down (capability 10) says the controller lost the gateway's control
	// channel longer than its grace period ago: it is ordered last in
	// every segment, and the client uses it only if no other answers.
	Down bool `json:"down,omitempty"`
	// TCPEndpoint (capability 13) is where the gateway accepts WireGuard
	// over TLS (host:port; its Hello.TCPEndpoint), for clients whose UDP
	// is blocked. Empty: UDP only.
	TCPEndpoint string `json:"tcp_endpoint,omitempty"`
	// Draining (capability 14) says an admin drains the gateway: it is
	// ordered after the gateways that are not, and the client moves each
	// segment off it the first moment no connection into the segment is
	// open (connections open through it would be cut by a move).
	Draining bool `json:"draining,omitempty"`
}

// FlowEvents is a batch of flow records a gateway reports.
type FlowEvents struct {
	Events []FlowEvent `json:"events"`
	// Capability 11. SpoolID names the spool the events' Seq numbers
	// belong to (empty: unnumbered events, as before 9). SentAt is the
	// gateway's clock when it sent the frame (for skew alerts).
	SpoolID string       `json:"spool_id,omitempty"`
	SentAt  time.Time    `json:"sent_at,omitzero"`
	Spool   *SpoolStatus `json:"spool,omitempty"`
}

// FlowAction is what happened to a flow.
type FlowAction string

// Flow actions.
const (
	FlowAllow FlowAction = "allow"
	FlowDeny  FlowAction = "deny"
	FlowCut   FlowAction = "cut" // an open flow closed because policy changed or a condition no longer holds
	// FlowDNSDeny is a DNS lookup of an internal name answered NXDOMAIN
	// (hidden or nonexistent); Name holds the name asked for.
	FlowDNSDeny FlowAction = "dns-deny"
	// FlowEnd (capability 11) is a flow leaving the connection table, with
	// its counters; EndReason says why.
	FlowEnd FlowAction = "end"
)

// Flow end reasons.
const (
	EndClosed     = "closed"      // TCP FIN both ways, or a RST
	EndIdle       = "idle"        // idle past its timeout
	EndCut        = "cut"         // the policy (or a rule condition) no longer allows it
	EndSessionEnd = "session-end" // its device left the map: session ended, device revoked
)

// FlowEvent is one flow record.
type FlowEvent struct {
	Time     time.Time      `json:"time"`
	Action   FlowAction     `json:"action"`
	DeviceID string         `json:"device_id,omitempty"`
	User     string         `json:"user,omitempty"`
	App      string         `json:"app,omitempty"`
	Rule     string         `json:"rule,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Proto    policy.Proto   `json:"proto"`
	Src      netip.AddrPort `json:"src"`
	Dst      netip.AddrPort `json:"dst"`
	Name     string         `json:"name,omitempty"` // the DNS name asked for (dns-deny)
	// Capability 11.
	Seq uint64 `json:"seq,omitempty"` // per spool, from 1
	// Counters of an end: client → app and app → client.
	PacketsToApp    uint64        `json:"packets_to_app,omitempty"`
	BytesToApp      uint64        `json:"bytes_to_app,omitempty"`
	PacketsToClient uint64        `json:"packets_to_client,omitempty"`
	BytesToClient   uint64        `json:"bytes_to_client,omitempty"`
	Duration        time.Duration `json:"duration_ns,omitempty"`
	EndReason       string        `json:"end_reason,omitempty"`
	Session         string        `json:"session,omitempty"`        // session ID of the device, when the map said
	PolicyVersion   int64         `json:"policy_version,omitempty"` // the policy version the gateway enforced
}

// ErrFrameTooLarge is returned for a frame above MaxFrameSize.
var ErrFrameTooLarge = errors.New("control frame too large")

// WriteFrame writes one length-prefixed frame.
func WriteFrame(w io.Writer, f *Frame) error {
	buf, err := EncodeFrame(f)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// EncodeFrame returns f as it goes on the wire: the 4-byte length, then
// the JSON body. The one encoding of a frame; write it whole.
func EncodeFrame(f *Frame) ([]byte, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode %s frame: %w", f.Type, err)
	}
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%s frame of %d bytes: %w", f.Type, len(b), ErrFrameTooLarge)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	return buf, nil
}

// ReadFrame reads one frame, rejecting oversized or malformed ones before
// acting on them.
func ReadFrame(r io.Reader) (*Frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, ErrFrameTooLarge)
	}
	if n == uint32(len(pingJSON)) {
		// Pings, the most frequent frame (every agent, every KeepAlive),
		// skip the JSON decoder: a tenth of an idle controller's CPU at
		// 10,000 agents.
		var b [len(pingJSON)]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("read frame body: %w", err)
		}
		if string(b[:]) == pingJSON {
			return &Frame{Type: TypePing}, nil
		}
		return DecodeFrame(b[:])
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	if rev, ok := plainAck(b); ok {
		// Acks are the next most frequent: one per map per agent, 10,000
		// for a change that reaches every device.
		return &Frame{Type: TypeAck, Ack: &Ack{Revision: rev}}, nil
	}
	return DecodeFrame(b)
}

// Prefix and suffix of an ack without error as EncodeFrame writes it.
const (
	ackJSONPrefix = `{"type":"ack","ack":{"revision":`
	ackJSONSuffix = `}}`
)

// plainAck recognises exactly the bytes EncodeFrame writes for an ack
// with a revision and nothing else; anything else (an error, a resync,
// another spelling of the same JSON) goes to the decoder.
func plainAck(b []byte) (uint64, bool) {
	digits, ok := bytes.CutPrefix(b, []byte(ackJSONPrefix))
	if !ok {
		return 0, false
	}
	if digits, ok = bytes.CutSuffix(digits, []byte(ackJSONSuffix)); !ok || len(digits) == 0 || len(digits) > 20 ||
		(digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	var rev uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if rev > (math.MaxUint64-d)/10 {
			return 0, false
		}
		rev = rev*10 + d
	}
	return rev, true
}

// pingJSON is a ping frame's body as EncodeFrame writes it.
const pingJSON = `{"type":"ping"}`

// DecodeFrame parses and validates one frame body.
func DecodeFrame(b []byte) (*Frame, error) {
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode control frame: %w", err)
	}
	set := 0
	for _, p := range []bool{f.Hello != nil, f.GatewayMap != nil, f.ClientMap != nil, f.FlowEvents != nil, f.Ack != nil,
		f.Activity != nil, f.Posture != nil, f.Renew != nil, f.Certificate != nil,
		f.GatewayDelta != nil, f.ClientDelta != nil, f.AuditCheckpoint != nil, f.AuditAlert != nil, f.FlowAck != nil,
		f.Revocation != nil} {
		if p {
			set++
		}
	}
	want := 1
	if f.Type == TypeError || f.Type == TypePing {
		want = 0
	}
	switch f.Type {
	case TypeHello:
		if f.Hello == nil {
			set = -1
		}
	case TypeGatewayMap:
		if f.GatewayMap == nil {
			set = -1
		}
	case TypeClientMap:
		if f.ClientMap == nil {
			set = -1
		}
	case TypeFlowEvents:
		if f.FlowEvents == nil {
			set = -1
		}
	case TypeAck:
		if f.Ack == nil {
			set = -1
		}
	case TypeActivity:
		if f.Activity == nil {
			set = -1
		}
	case TypePosture:
		if f.Posture == nil {
			set = -1
		}
	case TypeRenew:
		if f.Renew == nil {
			set = -1
		}
	case TypeCertificate:
		if f.Certificate == nil {
			set = -1
		}
	case TypeGatewayDelta:
		if f.GatewayDelta == nil {
			set = -1
		} else if f.GatewayDelta.To <= f.GatewayDelta.From {
			return nil, fmt.Errorf("decode control frame: %s from revision %d to %d goes backwards", f.Type, f.GatewayDelta.From, f.GatewayDelta.To)
		}
	case TypeClientDelta:
		if f.ClientDelta == nil {
			set = -1
		} else if f.ClientDelta.To <= f.ClientDelta.From {
			return nil, fmt.Errorf("decode control frame: %s from revision %d to %d goes backwards", f.Type, f.ClientDelta.From, f.ClientDelta.To)
		}
	case TypeAuditCheckpoint:
		if f.AuditCheckpoint == nil {
			set = -1
		}
	case TypeAuditAlert:
		if f.AuditAlert == nil {
			set = -1
		}
	case TypeFlowAck:
		if f.FlowAck == nil {
			set = -1
		}
	case TypeRevocation:
		if f.Revocation == nil {
			set = -1
		}
	case TypeError, TypePing:
	default:
		return nil, fmt.Errorf("decode control frame: unknown type %q", f.Type)
	}
	if set != want {
		return nil, fmt.Errorf("decode control frame: %q frame must carry exactly its own payload", f.Type)
	}
	return &f, nil
}

// Enrollment and login travel over the controller's HTTPS API (the agent has
// no certificate yet). The agent generates its WireGuard key and its TLS key
// itself and sends only the public halves: a WireGuard public key and a PEM
// certificate signing request.

// EnrollGatewayRequest is the body of POST /v1/enroll/gateway.
type EnrollGatewayRequest struct {
	Token     string       `json:"token"`
	Name      string       `json:"name"`
	PublicKey wgkey.Public `json:"public_key"`
	CSR       string       `json:"csr"`      // PEM
	Endpoint  string       `json:"endpoint"` // host:port clients dial for WireGuard
}

// LoginRequest is the body of POST /v1/login (local user, password + TOTP,
// or password + one of the user's one-time recovery codes instead of the
// TOTP code).
type LoginRequest struct {
	Username     string `json:"username"`
	Password     string `json:"password"`
	TOTP         string `json:"totp,omitempty"`
	RecoveryCode string `json:"recovery_code,omitempty"`
	// BreakGlass asks for emergency access with a break-glass account:
	// RecoveryCode is then one of its sealed one-time codes and
	// Justification (1 to MaxJustification bytes) says why. The session
	// is time-bound and reaches only emergency apps; the use raises an
	// alert and waits for two admins' review. (Added with the break-glass
	// feature; a controller without it refuses the unknown fields.)
	BreakGlass    bool   `json:"break_glass,omitempty"`
	Justification string `json:"justification,omitempty"`
	DeviceEnroll
}

// MaxJustification bounds a break-glass justification, in bytes.
const MaxJustification = 1000

// DeviceEnroll is the device half of every sign-in, whatever proves the
// user: the public halves of the keys the device made, and which device it
// is.
type DeviceEnroll struct {
	Hostname  string       `json:"hostname"`
	PublicKey wgkey.Public `json:"public_key"`
	CSR       string       `json:"csr"` // PEM
	// DeviceID, when set, re-enrolls an existing device of the same user
	// (same key); otherwise a new device is created.
	DeviceID string `json:"device_id,omitempty"`
}

// EnrollResponse answers both: the agent's identity and certificate.
type EnrollResponse struct {
	ID          string     `json:"id"` // gateway or device ID; the certificate's CommonName
	User        string     `json:"user,omitempty"`
	OverlayAddr netip.Addr `json:"overlay_addr"`
	Certificate string     `json:"certificate"` // PEM, issued by the controller CA
	// ControlAddr is the QUIC control address (host:port, UDP); empty means
	// the same host and port as the API URL.
	ControlAddr string `json:"control_addr,omitempty"`
	// NoMFA: the sign-in proved no second factor and these apps need one
	// (client sign-ins only).
	NoMFA *NoMFA `json:"no_mfa,omitempty"`
}
