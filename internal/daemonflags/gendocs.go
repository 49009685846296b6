//go:build gendocs

package daemonflags

import (
	"flag"
	"fmt"
	"io"

	"github.com/cordonhq/cordon/internal/gendocs"
)

func init() {
	genDocs = func(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
		if len(args) == 0 || args[0] != gendocs.Command {
			return 0, false
		}
		if len(args) != 2 {
			fmt.Fprintf(stderr, "usage: %s %s DIR\n", fs.Name(), gendocs.Command)
			return 2, true
		}
		if err := gendocs.WriteFlagMan(fs, args[1]); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			return 1, true
		}
		return 0, true
	}
}
