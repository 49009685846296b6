package wgstream

import (
	"testing"
)

// initiationsByFirstByte is countSent's loop before it checked lengths
// first: it read every packet's first byte.
func initiationsByFirstByte(bufs [][]byte) uint64 {
	var n uint64
	for _, p := range bufs {
		if len(p) > 0 && p[0] == msgInitiation {
			n++
		}
	}
	return n
}

func wgMessage(typ byte, size int) []byte {
	b := make([]byte, size)
	b[0] = typ
	return b
}

func TestInitiationsCounted(t *testing.T) {
	init := wgMessage(msgInitiation, fixedSize[msgInitiation])
	for _, c := range []struct {
		name string
		bufs [][]byte
		want uint64
	}{
		{"one initiation", [][]byte{init}, 1},
		{"a data batch", [][]byte{wgMessage(msgTransport, 1452), wgMessage(msgTransport, 32), wgMessage(msgTransport, 148)}, 0}, // 148: padded to a tiny MTU
		{"mixed", [][]byte{wgMessage(msgTransport, 1452), init, wgMessage(msgResponse, fixedSize[msgResponse]), init}, 2},
		{"type 1 of the wrong size is not an initiation", [][]byte{wgMessage(msgInitiation, 147), wgMessage(msgInitiation, 1452)}, 0},
		{"empty packets", [][]byte{nil, {}}, 0},
	} {
		if got := initiations(c.bufs); got != c.want {
			t.Errorf("%s: initiations = %d, want %d", c.name, got, c.want)
		}
	}
}

// BenchmarkCountInitiations counts the initiations in 128-packet data
// batches (what wireguard-go's encryption hands Send) drawn in turn from
// 16 MiB of buffers, more than the caches hold, as on the data path where
// other cores wrote them. by-first-byte is the loop before the change.
func BenchmarkCountInitiations(b *testing.B) {
	const batch, size = 128, 1452
	pool := make([][]byte, (16<<20)/size)
	for i := range pool {
		pool[i] = wgMessage(msgTransport, size)
	}
	for _, bc := range []struct {
		name string
		fn   func([][]byte) uint64
	}{{"by-first-byte", initiationsByFirstByte}, {"by-length", initiations}} {
		b.Run(bc.name, func(b *testing.B) {
			var sink uint64
			at := 0
			for b.Loop() {
				if at+batch > len(pool) {
					at = 0
				}
				sink += bc.fn(pool[at : at+batch])
				at += batch
			}
			if sink != 0 {
				b.Fatal("counted an initiation in data batches")
			}
		})
	}
}
