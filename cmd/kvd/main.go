// Command kvd is the dialkv server. `kvd serve` runs one node; `kvd
// cluster` runs a local cluster of `kvd serve` processes for development.
package main

import (
	"fmt"
	"os"

	"github.com/dialkv/dialkv/internal/version"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "kvd",
		Short:         "dialkv server: a replicated, range-sharded key-value database",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("kvd {{.Version}}\n")
	root.AddCommand(serveCmd(), clusterCmd(), certCmd(), restoreCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kvd:", err)
		os.Exit(1)
	}
}
