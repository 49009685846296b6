// Package daemonflags parses the command line of the two daemons
// (cordon-controller, cordon-gateway), which take flags only: --version
// (or the word "version") prints the version, and any other argument is
// refused. The flag package stops at the first argument, so without that
// refusal "cordon-controller version --listen X" started a daemon on the
// defaults, ignoring every flag after the word.
package daemonflags

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/cordonhq/cordon/internal/buildinfo"
)

// genDocs is set only in binaries built with -tags gendocs (gendocs.go):
// "DAEMON __gendocs DIR" writes the daemon's manual page from fs.
var genDocs func(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool)

// Parse adds --version to fs, parses args and handles what ends the
// command at once (--help, --version, a bad flag, an argument): then done
// is true and code is the exit status. fs's name names the daemon, and
// fs writes its own errors and usage to its output.
func Parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	showVersion := fs.Bool("version", false, "print the version and exit")
	if genDocs != nil {
		if code, done := genDocs(fs, args, stderr); done {
			return code, true
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if *showVersion || (fs.NArg() == 1 && fs.Arg(0) == "version") {
		fmt.Fprintln(stdout, fs.Name(), buildinfo.Version())
		return 0, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q: %s takes flags only, and flags after an argument would be ignored (--version prints the version; --help lists the flags)\n",
			fs.Name(), fs.Arg(0), fs.Name())
		return 2, true
	}
	return 0, false
}
