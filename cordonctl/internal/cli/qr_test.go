package cli

import (
	"strings"
	"testing"

	"github.com/boombuler/barcode/qr"
)

// The drawing must decode back to the same modules: every half block maps
// to two modules of the code.
func TestWriteQRMatchesCode(t *testing.T) {
	const uri = "otpauth://totp/Cordon:nurse?issuer=Cordon&secret=JBSWY3DPEHPK3PXP"
	var b strings.Builder
	if err := writeQR(&b, uri); err != nil {
		t.Fatal(err)
	}
	code, err := qr.Encode(uri, qr.M, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Bounds().Dx()
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if want := (n + 4 + 1) / 2; len(lines) != want {
		t.Fatalf("%d lines, want %d", len(lines), want)
	}
	for row, line := range lines {
		cells := []rune(line)
		if len(cells) != n+4 {
			t.Fatalf("line %d has %d cells, want %d", row, len(cells), n+4)
		}
		for x, c := range cells {
			for half, y := range []int{2 * row, 2*row + 1} {
				mx, my := x-2, y-2
				want := false
				if mx >= 0 && my >= 0 && mx < n && my < n {
					r, _, _, _ := code.At(mx, my).RGBA()
					want = r == 0
				}
				got := c == ' ' || (half == 0 && c == '▄') || (half == 1 && c == '▀')
				if got != want {
					t.Fatalf("module (%d,%d): drawn dark=%v, code dark=%v", mx, my, got, want)
				}
			}
		}
	}
}
