package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/boombuler/barcode/qr"
)

// writeQR draws s as a QR code with Unicode half blocks (two modules per
// character cell), with the quiet zone scanners need, so an authenticator
// app can read the otpauth URI straight off the terminal.
func writeQR(w io.Writer, s string) error {
	code, err := qr.Encode(s, qr.M, qr.Auto)
	if err != nil {
		return fmt.Errorf("draw QR code: %w", err)
	}
	const quiet = 2
	n := code.Bounds().Dx()
	dark := func(x, y int) bool {
		x, y = x-quiet, y-quiet
		if x < 0 || y < 0 || x >= n || y >= n {
			return false
		}
		r, _, _, _ := code.At(x, y).RGBA()
		return r == 0
	}
	var b strings.Builder
	size := n + 2*quiet
	for y := 0; y < size; y += 2 {
		for x := range size {
			top, bottom := dark(x, y), dark(x, y+1)
			// Light modules print as blocks: the code reads on dark
			// terminals, which most admins use.
			switch {
			case !top && !bottom:
				b.WriteRune('█')
			case !top:
				b.WriteRune('▀')
			case !bottom:
				b.WriteRune('▄')
			default:
				b.WriteRune(' ')
			}
		}
		b.WriteByte('\n')
	}
	_, err = io.WriteString(w, b.String())
	return err
}
