package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/replication"
)

func restoreCmd() *cobra.Command {
	var from, id, dataDir, initial, logLevel string
	var replicas int
	cmd := &cobra.Command{
		Use:   "restore --from BACKUP --id ID --data-dir DIR --initial-cluster id=raftaddr,...",
		Short: "Prepare a founding node's data directory from a backup",
		Long: `Verify a backup (kvctl backup save) and create DIR, a founding node's data
directory of a new cluster holding the backup's ranges. Run it on every
founding node with the same --from backup, --initial-cluster and
--replicas, then start each with kvd serve and the same --id, --data-dir,
--initial-cluster and --replicas.

The restored ranges keep the backup's bounds and keys (revision 1 each)
under new range ids above every id of the backed-up cluster, with fresh
Raft logs: session tokens and watch cursors from before the restore are
refused. DIR must not exist or be empty; the directory is built beside it
(DIR.restoring) and renamed into place last, so an interrupted restore
leaves no DIR and can simply be run again. A backup that fails
verification restores nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || id == "" || dataDir == "" || initial == "" {
				return errors.New("restore needs --from, --id, --data-dir and --initial-cluster")
			}
			peers, err := replication.ParseInitialCluster(initial)
			if err != nil {
				return fmt.Errorf("--initial-cluster: %w", err)
			}
			log, err := newLogger(logLevel, "text")
			if err != nil {
				return err
			}
			if err := replication.PrepareRestore(replication.RestoreConfig{
				From: from, NodeID: id, DataDir: dataDir, InitialCluster: peers, Replicas: replicas, Logger: log,
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s for node %s; start it with kvd serve\n", from, dataDir, id)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "the backup: a directory or a .tar file (required)")
	fl.StringVar(&id, "id", "", "this node's id, as in --initial-cluster (required)")
	fl.StringVar(&dataDir, "data-dir", "", "the data directory to create (required)")
	fl.StringVar(&initial, "initial-cluster", "", "founding members as id=raftaddr,..., as kvd serve gets them (required)")
	fl.IntVar(&replicas, "replicas", 3, "replicas per range, as kvd serve gets it")
	fl.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}
