package control

import (
	"log/slog"
	"net"

	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Gateway restarts. A gateway that restarts loses its WireGuard sessions,
// and its clients would keep sending on the dead ones until WireGuard's own
// timers give up on them (5 to 15 s). The gateway names each run of its
// process in its hello (Hello.Instance); the controller passes the latest
// one to clients in ClientGateway.Instance, so a new run changes the
// clients' maps, and clients that see it change handshake again at once.
//
// Ordering comes from the two-phase push: the new run's hello triggers a
// recompute that sends the gateway its map and waits for the ack before
// the clients' maps carry the new instance, so the clients' handshakes find
// their peers configured.
//
// The last instance is kept after the gateway disconnects (in memory,
// pruned of deleted gateways): a disconnect alone does not change the
// clients' maps, and a gateway that only lost its control connection comes
// back with the same instance, which resets nothing.

// noteInstanceLocked records the instance a gateway said hello with.
// Invalid ones (and hellos from before capability 5, with none) leave the
// last known instance in place.
func (s *Server) noteInstanceLocked(log *slog.Logger, gatewayID string, id controlproto.InstanceID) {
	if id == "" {
		return
	}
	if !id.Valid() {
		log.Warn("gateway sent an invalid instance ID; ignoring it")
		return
	}
	if old := s.instances[gatewayID]; old != id {
		log.Info("gateway process started", "instance", id, "previous", old)
	}
	s.instances[gatewayID] = id
}

// instancesLocked prunes the instances of gateways that no longer exist
// (unless connected now: then they may be newer than ix) and returns a copy
// for a recompute.
func (s *Server) instancesLocked(ix *netmap.Index) map[string]controlproto.InstanceID {
	out := make(map[string]controlproto.InstanceID, len(s.instances))
	for id, inst := range s.instances {
		if _, ok := ix.Gateway(id); !ok {
			if s.agents[id] == nil {
				delete(s.instances, id)
			}
			continue
		}
		out[id] = inst
	}
	return out
}

// maxTCPEndpoint bounds a gateway's TCP endpoint (host:port), like the
// admin API bounds its UDP endpoint.
const maxTCPEndpoint = 300

// noteTCPEndpointLocked records where a gateway accepts WireGuard over TLS
// (Hello.TCPEndpoint, capability 13); client maps carry it
// (ClientGateway.TCPEndpoint). A hello without one means the gateway runs
// without --tcp-listen now: its clients lose the TCP path. Invalid ones
// are ignored (the gateway keeps UDP only).
func (s *Server) noteTCPEndpointLocked(log *slog.Logger, gatewayID, ep string) {
	if ep != "" {
		if _, _, err := net.SplitHostPort(ep); err != nil || len(ep) > maxTCPEndpoint {
			log.Warn("gateway sent an invalid TCP endpoint; ignoring it", "tcp_endpoint", ep)
			ep = ""
		}
	}
	if ep == "" {
		delete(s.tcpEndpoints, gatewayID)
		return
	}
	s.tcpEndpoints[gatewayID] = ep
}

// tcpEndpointsLocked prunes the TCP endpoints of gateways that no longer
// exist (unless connected now) and returns a copy for a recompute.
func (s *Server) tcpEndpointsLocked(ix *netmap.Index) map[string]string {
	out := make(map[string]string, len(s.tcpEndpoints))
	for id, ep := range s.tcpEndpoints {
		if _, ok := ix.Gateway(id); !ok {
			if s.agents[id] == nil {
				delete(s.tcpEndpoints, id)
			}
			continue
		}
		out[id] = ep
	}
	return out
}
