package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/backupfile"
)

// backupRounds bounds how often a backup re-reads the routing table to
// cover ranges that split while it ran.
const backupRounds = 10

// minBackupRangeTimeout is the least time one range's stream gets, whatever
// --timeout says: a 64 MiB range takes longer than a request.
const minBackupRangeTimeout = 10 * time.Minute

func (a *app) backupCmd() *cobra.Command {
	save := &cobra.Command{
		Use:   "save DIR|FILE.tar",
		Short: "Back up every range into a new directory or tar file",
		Long: `Back up every user range: each is read from one replica (a follower when
there is one) at one applied index of its own, after that replica has
applied everything its leader had committed when the range's read began,
and once the range holds no transaction locks. Writes go on meanwhile.

The target must not exist. A name ending in .tar is written as one tar file,
anything else as a directory; either holds manifest.json (cluster id, time,
and per range its bounds, applied index, key count, SHA-256 digest, file
name and file SHA-256) and one range-<id>.kvs file per range. The backup is
staged beside the target and renamed into place once complete, so the
target never holds half a backup. Keys attached to a lease, and the meta
range (routing, members, leases, users and roles), are not backed up.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.runBackupSave(cmd.Context(), args[0])
		}),
	}
	verify := &cobra.Command{
		Use:   "verify DIR|FILE.tar",
		Short: "Check a backup against its manifest",
		Long: `Re-hash every file of a backup and recompute every range's key count and
digest from its file; exit 0 when all match the manifest, else 1 naming the
first mismatch.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			m, err := backupfile.Verify(args[0])
			if err != nil {
				return fmt.Errorf("backup verify: %w", err)
			}
			var keys uint64
			for _, r := range m.Ranges {
				keys += r.Keys
			}
			fmt.Fprintf(a.env.stdout, "backup %s OK: cluster %s, %s, %d ranges, %d keys\n",
				args[0], m.ClusterID, m.Created.UTC().Format(time.RFC3339), len(m.Ranges), keys)
			return nil
		}),
	}
	return a.groupCmd("backup", "Back up the cluster and check backups", save, verify)
}

// backedUp is one range as backed up.
type backedUp struct {
	r         backupfile.Range
	clusterID string
}

func (a *app) runBackupSave(ctx context.Context, target string) error {
	if _, err := os.Lstat(target); err == nil {
		return usagef("backup save: %s already exists", target)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()
	started := time.Now().UTC()
	removeAbandonedStages(target)
	stage, err := os.MkdirTemp(filepath.Dir(filepath.Clean(target)), "."+filepath.Base(target)+".partial-")
	if err != nil {
		return fmt.Errorf("backup save: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(stage)
		}
	}()
	got := map[uint64]*backedUp{}
	for round := 0; ; round++ {
		if round == backupRounds {
			return fmt.Errorf("backup save: the ranges kept changing; %d rounds did not cover the key space", backupRounds)
		}
		rctx, cancel := context.WithTimeout(ctx, a.timeout)
		table, err := c.Ranges(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("backup save: routing table: %w", err)
		}
		for _, d := range table.Ranges {
			if got[d.Id] != nil {
				continue
			}
			b, err := a.backupOne(ctx, c, stage, d.Id)
			if err != nil {
				return err
			}
			got[d.Id] = b
		}
		ranges, redo := tile(got)
		for _, id := range redo {
			delete(got, id)
		}
		if ranges != nil {
			m := &backupfile.Manifest{Format: backupfile.FormatVersion, ClusterID: ranges[0].clusterID, Created: started}
			var keys uint64
			for _, b := range ranges {
				if b.clusterID != m.ClusterID {
					return fmt.Errorf("backup save: ranges of two clusters (%s, %s): the endpoints are not one cluster", m.ClusterID, b.clusterID)
				}
				m.Ranges = append(m.Ranges, b.r)
				keys += b.r.Keys
			}
			// Ranges read before a split and left out: their files go.
			for id := range got {
				if !slices.ContainsFunc(m.Ranges, func(r backupfile.Range) bool { return r.ID == id }) {
					os.Remove(filepath.Join(stage, backupfile.FileName(id)))
				}
			}
			if err := backupfile.WriteManifest(stage, m); err != nil {
				return err
			}
			if err := backupfile.Commit(stage, target, m); err != nil {
				return err
			}
			committed = true
			fmt.Fprintf(a.env.stdout, "backed up %d ranges, %d keys to %s in %v\n", len(m.Ranges), keys, target, time.Since(started).Round(time.Millisecond))
			return nil
		}
	}
}

// tile orders the ranges backed up by start and returns them when they
// cover the key space exactly once. Otherwise it returns nil, with the
// ranges to read again: one read before a split whose other side was read
// after it overlaps that side (it is the wider, so it goes); a gap needs
// only a fresh routing table.
func tile(got map[uint64]*backedUp) (ranges []*backedUp, redo []uint64) {
	all := make([]*backedUp, 0, len(got))
	for _, b := range got {
		all = append(all, b)
	}
	slices.SortFunc(all, func(x, y *backedUp) int { return bytes.Compare(x.r.Start, y.r.Start) })
	var prevEnd []byte
	ok := true
	for i, b := range all {
		if i > 0 && (len(prevEnd) == 0 || bytes.Compare(b.r.Start, prevEnd) < 0) {
			redo = append(redo, all[i-1].r.ID) // overlap: the earlier one is wider
			ok = false
		} else if !bytes.Equal(b.r.Start, prevEnd) {
			ok = false // a gap
		}
		prevEnd = b.r.End
	}
	if !ok || len(all) == 0 || len(prevEnd) != 0 {
		return nil, redo
	}
	return all, nil
}

// backupOne streams range id into its file in dir.
func (a *app) backupOne(ctx context.Context, c *client.Client, dir string, id uint64) (*backedUp, error) {
	ctx, cancel := context.WithTimeout(ctx, max(a.timeout, minBackupRangeTimeout))
	defer cancel()
	f, err := os.Create(filepath.Join(dir, backupfile.FileName(id)))
	if err != nil {
		return nil, fmt.Errorf("backup save: %w", err)
	}
	defer f.Close()
	var (
		b  *backedUp
		rw *backupfile.RangeWriter
	)
	err = c.BackupRange(ctx, id, func(m *kvpb.BackupRangeChunk) error {
		if d := m.GetRange(); d != nil { // the first chunk (again, after a retry)
			if _, err := f.Seek(0, 0); err != nil {
				return err
			}
			if err := f.Truncate(0); err != nil {
				return err
			}
			rw = backupfile.NewRangeWriter(f)
			b = &backedUp{clusterID: m.ClusterId, r: backupfile.Range{
				ID: d.Id, Start: d.Start, End: d.End, AppliedIndex: m.AppliedIndex, File: backupfile.FileName(id),
			}}
		}
		if rw == nil {
			return fmt.Errorf("range %d: the stream did not start with the range", id)
		}
		for _, kv := range m.Kvs {
			if err := rw.Add(kv.Key, kv.Value, kv.Revision); err != nil {
				return err
			}
		}
		if !m.Last {
			return nil
		}
		if err := rw.Finish(&b.r); err != nil {
			return err
		}
		if b.r.Keys != m.Keys || b.r.SHA256 != m.Sha256 {
			return fmt.Errorf("range %d: received %d keys with digest %s; the replica sent %d keys, digest %s",
				id, b.r.Keys, b.r.SHA256, m.Keys, m.Sha256)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup save: range %d: %w", id, err)
	}
	if err := backupfile.SyncFile(f); err != nil {
		return nil, err
	}
	return b, nil
}

// abandonedAfter is how old a save's staging directory (or a tar's
// partial file) must be before a later save of the same target takes it
// for one a killed save left behind and removes it. A live save touches
// its staging directory with every range it writes.
const abandonedAfter = 10 * time.Minute

// removeAbandonedStages removes what killed saves of target left beside
// it: ".NAME.partial-*" not changed for abandonedAfter.
func removeAbandonedStages(target string) {
	dir, base := filepath.Dir(filepath.Clean(target)), filepath.Base(target)
	matches, _ := filepath.Glob(filepath.Join(dir, "."+base+".partial-*"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && time.Since(fi.ModTime()) > abandonedAfter {
			os.RemoveAll(m)
		}
	}
}
