package jepsen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/backupfile"
	"github.com/dialkv/dialkv/raftstore"
)

// Backup and restore with real processes (issue 18: "kill -9 during
// backup or restore, rerun, it succeeds"). The in-process test
// (cmd/kvctl/backup_test.go) fakes an interrupted restore by leaving a
// staging directory behind; here kvctl and kvd are SIGKILLed while they
// write.
const (
	backupKeys = 2000
	// backupValueBytes pads every value so that the backup and the restore
	// take long enough for a poll 1 ms apart to catch them halfway: 2,000
	// keys make about 8 MB, which a restore takes 80-200 ms to write.
	backupValueBytes = 4 << 10
	backupWriters    = 8
	// backupLiveWriters overwrite keys while the backups run; each owns
	// the keys k with k % backupLiveWriters == its number, so one key's
	// writes are sequential and a higher generation is a later write.
	backupLiveWriters = 2
	afterRestoreKeys  = 1000
	// killAttempts bounds the runs started to be killed halfway: a run
	// that finished before the kill is not one.
	killAttempts = 5
	// restoreKillBytes is how much a restore has written (wchar) when it
	// is killed: a whole restore of this backup writes about 12.5 MB (the
	// keys, bbolt's pages and the log), so at 8 MB it is in the middle of
	// its ranges: two of four stored, the third being written.
	restoreKillBytes = backupKeys * backupValueBytes
)

// backupKey is the key of number k of the workload.
func backupKey(k int) string { return fmt.Sprintf("bk/%04d", k) }

// backupValue is the value generation gen of key: the key and the
// generation first, so that a value read back names the write it came
// from.
func backupValue(key string, gen int) string {
	head := key + "#" + strconv.Itoa(gen) + ":"
	return head + strings.Repeat("v", backupValueBytes-len(head))
}

// parseBackupValue returns the generation of a value that backupValue
// made for key.
func parseBackupValue(key, value string) (int, bool) {
	rest, ok := strings.CutPrefix(value, key+"#")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, false
	}
	gen, err := strconv.Atoi(num)
	if err != nil || backupValue(key, gen) != value {
		return 0, false
	}
	return gen, true
}

// genLog records, per key, every generation ever sent (acknowledged or
// not) and each acknowledged one with when its answer came.
type genLog struct {
	mu    sync.Mutex
	sent  map[string]map[int]bool
	acked map[string][]ackedGen
}

type ackedGen struct {
	gen int
	at  time.Time
}

func newGenLog() *genLog {
	return &genLog{sent: map[string]map[int]bool{}, acked: map[string][]ackedGen{}}
}

// put sends generation gen of key through node (retrying the same value
// on an error, so a retry cannot invent anything) and records it.
func (g *genLog) put(ctx context.Context, c *Cluster, node int, key string, gen int) write {
	g.mu.Lock()
	if g.sent[key] == nil {
		g.sent[key] = map[int]bool{}
	}
	g.sent[key][gen] = true
	g.mu.Unlock()
	var w write
	for attempt := range 5 {
		w = putHTTP(ctx, c, (node+attempt)%c.N(), key, backupValue(key, gen))
		if w.ok || ctx.Err() != nil {
			break
		}
	}
	if w.ok {
		g.mu.Lock()
		g.acked[key] = append(g.acked[key], ackedGen{gen, w.at})
		g.mu.Unlock()
	}
	return w
}

// lastAckedBefore is, per key, the highest generation acknowledged before
// t (the keys' writes are sequential, so the highest is the last).
func (g *genLog) lastAckedBefore(t time.Time) map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for key, acks := range g.acked {
		for _, a := range acks {
			if a.at.Before(t) {
				if cur, ok := out[key]; !ok || a.gen > cur {
					out[key] = a.gen
				}
			}
		}
	}
	return out
}

func (g *genLog) wasSent(key string, gen int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sent[key][gen]
}

// startTool starts bin with args as a process of its own (SIGKILLed if the
// test dies), its output going to logPath; the test's cleanup kills it by
// PID if it still runs.
func startTool(t *testing.T, logPath, bin string, args ...string) *harness.Process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KVCTL_ENDPOINTS=")
	cmd.Stdout, cmd.Stderr = f, f
	p, err := harness.Start(cmd, harness.ProcOptions{DeathSignal: syscall.SIGKILL})
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("kill %s pid %d: %v", filepath.Base(bin), p.PID(), err)
		}
	})
	return p
}

// waitTool waits up to d for p to exit and returns its output and exit
// error.
func waitTool(t *testing.T, p *harness.Process, logPath string, d time.Duration) (string, error) {
	t.Helper()
	if !p.WaitFor(d) {
		t.Fatalf("pid %d still running after %v", p.PID(), d)
	}
	out, _ := os.ReadFile(logPath)
	_, err := p.Exited()
	return string(out), err
}

// killMidway starts bin with args and SIGKILLs it as soon as midway (given
// its PID) holds, polled 1 ms apart, or it has exited on its own. It
// reports whether SIGKILL is what ended it.
func killMidway(t *testing.T, logPath string, midway func(pid int) bool, bin string, args ...string) bool {
	t.Helper()
	p := startTool(t, logPath, bin, args...)
	err := harness.Poll(context.Background(), 20*time.Second, time.Millisecond, func(context.Context) (bool, error) {
		if done, _ := p.Exited(); done {
			return true, nil
		}
		return midway(p.PID()), nil
	})
	if err != nil {
		t.Logf("%s: not seen halfway: %v", filepath.Base(bin), err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	ws, ok := p.State().Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// partialRangeFiles lists the range files, with their sizes, of the
// staging directories `kvctl backup save target` leaves beside target.
func partialRangeFiles(target string) (dirs []string, files map[string]int64) {
	dirs, _ = filepath.Glob(filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".partial-*"))
	files = map[string]int64{}
	for _, d := range dirs {
		names, _ := filepath.Glob(filepath.Join(d, "range-*.kvs"))
		for _, n := range names {
			if fi, err := os.Stat(n); err == nil {
				files[n] = fi.Size()
			}
		}
	}
	return dirs, files
}

// bytesWritten is what process pid has written so far (/proc/PID/io's
// wchar), or 0 when that cannot be read.
func bytesWritten(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// storedRanges describes the user ranges a stopped store's state.db holds
// keys of (bucket "r" + big-endian id), as "id:keys ...", for the log.
func storedRanges(path string) string {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return err.Error()
	}
	defer db.Close()
	var out []string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if len(name) == 9 && name[0] == 'r' {
				if id := binary.BigEndian.Uint64(name[1:]); id != raftstore.MetaRangeID {
					out = append(out, fmt.Sprintf("%d:%d", id, b.Stats().KeyN))
				}
			}
			return nil
		})
	})
	if err != nil {
		return err.Error()
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

// treeSize is the number of regular files under dir and their bytes.
func treeSize(dir string) (files int, bytes int64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil // a file that vanished mid-walk is not counted
		}
		if fi, err := d.Info(); err == nil {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes
}

// TestProcess_BackupRestoreSurvivesKill9 backs up a 3-node cluster of real
// kvd processes under writes and splits with `kvctl backup save`, SIGKILLs
// one save halfway (its target must not be a backup) and reruns it; then
// restores three new nodes with `kvd restore`, SIGKILLing one restore
// halfway and rerunning it, starts them with `kvd serve` and the same
// flags, and checks: every write acknowledged before the backup began
// reads back (linearizable), no value is invented, each restored range's
// digest on every replica matches the manifest's restored_sha256, and
// 1,000 writes after the restore read back.
func TestProcess_BackupRestoreSurvivesKill9(t *testing.T) {
	begin := time.Now()
	old := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gens := newGenLog()

	// 1. 2,000 keys, each written once, while the key space splits twice.
	var (
		failed atomic.Int64
		wg     sync.WaitGroup
		next   atomic.Int64
	)
	for w := range backupWriters {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < backupKeys && ctx.Err() == nil; k = int(next.Add(1) - 1) {
				if !gens.put(ctx, old, w+k, backupKey(k), 0).ok {
					failed.Add(1)
				}
			}
		})
	}
	harness.Eventually(t, "a quarter of the keys written", 30*time.Second, func() bool { return next.Load() >= backupKeys/4 })
	mustKvctl(t, old, "range", "split", backupKey(backupKeys/3))
	harness.Eventually(t, "half of the keys written", 30*time.Second, func() bool { return next.Load() >= backupKeys/2 })
	mustKvctl(t, old, "range", "split", backupKey(2*backupKeys/3))
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d first writes never acknowledged", n, backupKeys)
	}
	t.Logf("%d keys of %d bytes written across 2 splits in %v", backupKeys, backupValueBytes, time.Since(begin).Round(time.Millisecond))

	// Overwrites go on through both backups.
	liveCtx, stopLive := context.WithCancel(ctx)
	var live sync.WaitGroup
	var liveAcked atomic.Int64
	for w := range backupLiveWriters {
		live.Go(func() {
			for gen := 1; gen < 1_000_000 && liveCtx.Err() == nil; gen++ {
				k := (gen*37)%(backupKeys/backupLiveWriters)*backupLiveWriters + w
				if gens.put(liveCtx, old, gen, backupKey(k), gen).ok {
					liveAcked.Add(1)
				}
			}
		})
	}
	defer func() { stopLive(); live.Wait() }()

	// 2. A save SIGKILLed while it writes a range file leaves no backup.
	work := t.TempDir()
	target := filepath.Join(work, "backup")
	saveArgs := []string{"--endpoints", strings.Join(old.GRPCAddrs(), ","), "--timeout", "10s", "backup", "save", target}
	caught := false
	for attempt := 1; attempt <= killAttempts && !caught; attempt++ {
		logPath := filepath.Join(work, fmt.Sprintf("save-killed-%d.log", attempt))
		killed := killMidway(t, logPath, func(int) bool {
			_, files := partialRangeFiles(target)
			for _, size := range files {
				if size > 0 {
					return true
				}
			}
			return false
		}, kvctlBin, saveArgs...)
		stages, files := partialRangeFiles(target)
		out, _ := os.ReadFile(logPath)
		t.Logf("save attempt %d: killed=%v, staging dirs %d, range files %v, output %q", attempt, killed, len(stages), files, out)
		if !killed {
			// It finished first: the backup is whole, and in the way.
			if err := os.RemoveAll(target); err != nil {
				t.Fatal(err)
			}
			continue
		}
		caught = len(files) > 0
		if r := kvctl(t, old, "", "backup", "verify", target); r.code == 0 {
			t.Fatalf("a save killed halfway left a backup that verifies: %v", r)
		} else {
			t.Logf("verify after the kill: exit %d, %s", r.code, strings.TrimSpace(r.stderr))
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("a save killed halfway left %s (docs/operations.md: an interrupted backup never leaves a file at the target)", target)
		}
	}
	if !caught {
		t.Fatalf("no save of %d attempts was killed while writing a range file", killAttempts)
	}

	// The rerun completes under the same writes, with a split while it runs.
	saveStart := time.Now()
	logPath := filepath.Join(work, "save.log")
	p := startTool(t, logPath, kvctlBin, saveArgs...)
	mustKvctl(t, old, "range", "split", backupKey(backupKeys/2))
	out, err := waitTool(t, p, logPath, 60*time.Second)
	if err != nil {
		t.Fatalf("rerun of backup save: %v: %s", err, out)
	}
	t.Logf("rerun of backup save: %s", strings.TrimSpace(out))
	stopLive()
	live.Wait()
	if r := kvctl(t, old, "", "backup", "verify", target); r.code != 0 {
		t.Fatalf("verify after the rerun: %v", r)
	} else {
		t.Logf("verify: %s", strings.TrimSpace(r.stdout))
	}
	m, err := backupfile.Verify(target)
	if err != nil {
		t.Fatal(err)
	}
	if stages, _ := partialRangeFiles(target); len(stages) > 0 {
		// Not a failure: nothing reads them, but an operator has to
		// remove them by hand.
		t.Logf("staging directories left by the killed saves: %v", stages)
	}
	mustRead := gens.lastAckedBefore(saveStart)
	t.Logf("backup of %d ranges; %d keys acknowledged before it began; %d overwrites acknowledged meanwhile", len(m.Ranges), len(mustRead), liveAcked.Load())
	if len(mustRead) != backupKeys {
		t.Fatalf("%d keys acknowledged before the backup, want %d", len(mustRead), backupKeys)
	}
	if crashes := old.Crashes(); len(crashes) > 0 {
		t.Errorf("nodes crashed during the backups: %+v", crashes)
	}
	if err := old.Close(); err != nil {
		t.Errorf("close the backed-up cluster: %v", err)
	}

	// 3. Three new nodes: their ports come from a fresh cluster, stopped
	// and wiped; each is restored, one of them SIGKILLed halfway first.
	restored := startCluster(t, 3)
	var initial []string
	for i := range restored.N() {
		if err := restored.Stop(i); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(restored.DataDir(i)); err != nil {
			t.Fatal(err)
		}
		initial = append(initial, restored.ID(i)+"="+restored.RaftAddrs()[i])
	}
	restoreArgs := func(i int) []string {
		return []string{"restore", "--from", target, "--id", restored.ID(i), "--data-dir", restored.DataDir(i),
			"--initial-cluster", strings.Join(initial, ","), "--replicas", "3"}
	}
	victim := 0
	staging := restored.DataDir(victim) + ".restoring"
	caught = false
	for attempt := 1; attempt <= killAttempts && !caught; attempt++ {
		logPath := filepath.Join(work, fmt.Sprintf("restore-killed-%d.log", attempt))
		var wrote int64
		killed := killMidway(t, logPath, func(pid int) bool {
			// The store's file is preallocated, so its size says
			// nothing; what the process has written does.
			wrote = bytesWritten(pid)
			return wrote >= restoreKillBytes
		}, kvdBin, restoreArgs(victim)...)
		files, size := treeSize(staging)
		_, dirErr := os.Lstat(restored.DataDir(victim))
		out, _ := os.ReadFile(logPath)
		t.Logf("restore attempt %d: killed=%v after writing %d bytes; %s holds %d files of %d bytes (ranges with keys in its store: %s); data dir: %v; output %q",
			attempt, killed, wrote, filepath.Base(staging), files, size, storedRanges(filepath.Join(staging, "state.db")), dirErr, out)
		switch {
		case !killed || files == 0:
			// It finished (or was killed after its rename): start over.
			if err := os.RemoveAll(restored.DataDir(victim)); err != nil {
				t.Fatal(err)
			}
		case dirErr == nil:
			t.Fatalf("a restore killed halfway left %s (docs/operations.md: a restore killed at any point leaves no DIR)", restored.DataDir(victim))
		default:
			caught = true
		}
	}
	if !caught {
		t.Fatalf("no restore of %d attempts was killed halfway", killAttempts)
	}
	for i := range restored.N() {
		logPath := filepath.Join(work, fmt.Sprintf("restore-%s.log", restored.ID(i)))
		start := time.Now()
		out, err := waitTool(t, startTool(t, logPath, kvdBin, restoreArgs(i)...), logPath, 60*time.Second)
		if err != nil {
			t.Fatalf("restore of %s: %v: %s", restored.ID(i), err, out)
		}
		files, size := treeSize(restored.DataDir(i))
		t.Logf("restore of %s took %v: %d files of %d bytes; %s", restored.ID(i), time.Since(start).Round(time.Millisecond), files, size, strings.TrimSpace(out))
	}
	if _, err := os.Lstat(staging); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the rerun restore left %s: %v", staging, err)
	}
	for i := range restored.N() {
		if err := restored.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := restored.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restored cluster ready %v into the test", time.Since(begin).Round(time.Millisecond))

	// 4. Before any new write: every replica's digest is the manifest's.
	checkRestoredDigests(t, ctx, restored, m)

	// Every key acknowledged before the backup began reads back, at its
	// last acknowledged generation or a later one that was sent.
	problems := readBackGens(ctx, restored, gens, mustRead)
	if len(problems) > 0 {
		t.Errorf("%d of %d keys wrong after the restore; first ones:\n%s", len(problems), len(mustRead), strings.Join(problems[:min(20, len(problems))], "\n"))
	}
	// Nothing invented: every key and value in the cluster was written.
	all := scanHTTP(t, restored, 1, "", "", "linearizable")
	invented := 0
	for k, v := range all {
		if gen, ok := parseBackupValue(k, v); !ok || !gens.wasSent(k, gen) {
			if invented++; invented <= 10 {
				t.Errorf("restored %s = %.40q..., never written", k, v)
			}
		}
	}
	if len(all) != backupKeys {
		t.Errorf("the restored cluster holds %d keys, want %d", len(all), backupKeys)
	}

	// 1,000 writes after the restore all read back.
	after := writeKeys(t, restored, "after/%04d", afterRestoreKeys, backupWriters)
	verifyReadable(t, restored, after)
	if crashes := restored.Crashes(); len(crashes) > 0 {
		t.Errorf("restored nodes crashed: %+v", crashes)
	}
	t.Logf("done in %v", time.Since(begin).Round(time.Millisecond))
}

// checkRestoredDigests waits until every node reports every range of the
// backup (by its bounds) and compares each replica's digest with the
// manifest's restored_sha256; the restored cluster must have a cluster id
// of its own.
func checkRestoredDigests(t *testing.T, ctx context.Context, c *Cluster, m *backupfile.Manifest) {
	t.Helper()
	want := map[string]string{}
	for _, r := range m.Ranges {
		want[string(r.Start)+"\x00"+string(r.End)] = r.RestoredSHA256
	}
	for i := range c.N() {
		var last string
		err := harness.Poll(ctx, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
			st, err := c.status(ctx, i, true)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			if id := st.GetClusterId(); id == "" || id == m.ClusterID {
				last = fmt.Sprintf("cluster id %q (the backup's %q)", id, m.ClusterID)
				return false, nil
			}
			var user int
			var mismatches []string
			for _, r := range st.GetNode().GetRanges() {
				if r.GetId() == raftstore.MetaRangeID {
					continue
				}
				user++
				key := string(r.GetStart()) + "\x00" + string(r.GetEnd())
				if w, ok := want[key]; !ok || w != r.GetDigest() {
					mismatches = append(mismatches, fmt.Sprintf("range %d [%q, %q): digest %q, manifest %q", r.GetId(), r.GetStart(), r.GetEnd(), r.GetDigest(), w))
				}
			}
			if len(mismatches) > 0 {
				// The ranges are as restored: nothing has written to
				// them, so a digest that differs is wrong, not late.
				return false, fmt.Errorf("%s: %s", c.ID(i), strings.Join(mismatches, "; "))
			}
			last = fmt.Sprintf("%d of %d ranges", user, len(m.Ranges))
			return user == len(m.Ranges), nil
		})
		if err != nil {
			t.Fatalf("digests of %s: %v (last: %s)", c.ID(i), err, last)
		}
	}
	t.Logf("%d ranges' digests match the manifest on all %d nodes", len(m.Ranges), c.N())
}

// readBackGens reads every key of mustRead with a linearizable GET,
// spread over the nodes, and returns a line for each whose value is not a
// generation sent for it at or after the one in mustRead. A 503 or 504 is
// retried: unavailability is allowed, a wrong answer is not.
func readBackGens(ctx context.Context, c *Cluster, gens *genLog, mustRead map[string]int) []string {
	keys := make([]string, 0, len(mustRead))
	for k := range mustRead {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var (
		mu       sync.Mutex
		problems []string
		wg       sync.WaitGroup
	)
	jobs := make(chan int)
	for range 8 {
		wg.Go(func() {
			for n := range jobs {
				key := keys[n]
				problem := "never answered"
				for attempt := range 10 {
					node := (n + attempt) % c.N()
					r, err := httpDo(ctx, c, http.MethodGet, kvURL(c, node, key, "consistency=linearizable"), nil)
					if err != nil || r.code == http.StatusServiceUnavailable || r.code == http.StatusGatewayTimeout {
						problem = fmt.Sprintf("%s via %s: %v %d", key, c.ID(node), err, r.code)
						select { // a leader election takes this long
						case <-ctx.Done():
						case <-time.After(100 * time.Millisecond):
						}
						continue
					}
					gen, ok := parseBackupValue(key, string(r.body))
					switch {
					case r.code == http.StatusNotFound:
						problem = fmt.Sprintf("LOST %s (generation %d acknowledged before the backup)", key, mustRead[key])
					case r.code != http.StatusOK:
						problem = fmt.Sprintf("%s via %s: %d %s", key, c.ID(node), r.code, r.body)
					case !ok || !gens.wasSent(key, gen):
						problem = fmt.Sprintf("INVENTED %s via %s: %.40q...", key, c.ID(node), r.body)
					case gen < mustRead[key]:
						problem = fmt.Sprintf("STALE %s via %s: generation %d, but %d was acknowledged before the backup", key, c.ID(node), gen, mustRead[key])
					default:
						problem = ""
					}
					break
				}
				if problem != "" {
					mu.Lock()
					problems = append(problems, problem)
					mu.Unlock()
				}
			}
		})
	}
	for n := range keys {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	slices.Sort(problems)
	return problems
}
