package storetest

// Cases for gateways' flow acknowledgements (issue 12).

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// PutFlowAck keeps one per gateway, round-trips every field, refuses an
// unknown gateway, and goes with its gateway.
func testFlowAcks(t *testing.T, s store.Store) {
	c := ctx(t)
	_, err := s.GetFlowAck(c, "g1")
	wantErr(t, "GetFlowAck before any", err, store.ErrNotFound)
	wantErr(t, "PutFlowAck of an unknown gateway", s.PutFlowAck(c, store.FlowAck{GatewayID: "nope", SpoolID: "s", Seq: 1, UpdatedAt: at(0)}), store.ErrNotFound)

	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateEnrollToken(c, token("t1", "clinical", "gw-a", "ha", at(time.Hour))))
	_, err = s.RedeemEnrollToken(c, []byte("ha"), at(0), store.Gateway{ID: "g1", PublicKey: key(t, 1)})
	must(t, err)

	a := store.FlowAck{GatewayID: "g1", SpoolID: "0123456789abcdef0123456789abcdef", Seq: 1<<62 + 5, UpdatedAt: at(time.Minute)}
	must(t, s.PutFlowAck(c, a))
	got, err := s.GetFlowAck(c, "g1")
	must(t, err)
	equal(t, "stored flow ack", got, a)
	b := store.FlowAck{GatewayID: "g1", SpoolID: "fedcba9876543210fedcba9876543210", Seq: 7, UpdatedAt: at(2 * time.Minute)}
	must(t, s.PutFlowAck(c, b))
	got, err = s.GetFlowAck(c, "g1")
	must(t, err)
	equal(t, "replaced flow ack", got, b)

	must(t, s.DeleteGateway(c, "g1"))
	_, err = s.GetFlowAck(c, "g1")
	wantErr(t, "GetFlowAck after the gateway was deleted", err, store.ErrNotFound)
}
