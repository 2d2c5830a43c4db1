package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is the dlock release, set at build time with
// -ldflags "-X github.com/dlock-dev/dlock/internal/cli.Version=v1.2.3".
// When it is left at "dev", the module version recorded by `go install
// module@version` is used if there is one.
var Version = "dev"

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the dlock version and the Go version it was built with",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version()
			if e.json {
				return e.printJSON(struct {
					Version string `json:"version"`
					Go      string `json:"go"`
					OS      string `json:"os"`
					Arch    string `json:"arch"`
				}{v, runtime.Version(), runtime.GOOS, runtime.GOARCH})
			}
			_, err := fmt.Fprintf(e.stdout, "dlock %s (%s %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

func version() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return Version
}
