package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// file is what the log needs of an open file. Segments are written with
// WriteAt at their tail and read with ReadAt from any goroutine.
type file interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's data durable (fdatasync on Linux).
	Sync() error
	Truncate(size int64) error
	// Allocate reserves size bytes, so that appends within them change
	// no metadata the sync would have to journal. Best effort.
	Allocate(size int64)
	Size() (int64, error)
	Close() error
}

// fileSystem is the log's directory. The log reaches the disk only
// through it, so that the crash tests can put a file system underneath
// that forgets what was not synced (memfs_test.go).
type fileSystem interface {
	// Create creates (truncating) the named file for reading and writing.
	Create(name string) (file, error)
	// Open opens the named file for reading and writing.
	Open(name string) (file, error)
	ReadFile(name string) ([]byte, error)
	Rename(from, to string) error
	Remove(name string) error
	// List returns the names of the files in the directory.
	List() ([]string, error)
	// SyncDir makes the directory's entries (creations, renames,
	// removals) durable.
	SyncDir() error
}

// osFS is a directory on the real file system.
type osFS struct{ dir string }

func (d osFS) path(name string) string { return filepath.Join(d.dir, name) }

func (d osFS) Create(name string) (file, error) {
	f, err := os.OpenFile(d.path(name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (d osFS) Open(name string) (file, error) {
	f, err := os.OpenFile(d.path(name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (d osFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }
func (d osFS) Rename(from, to string) error         { return os.Rename(d.path(from), d.path(to)) }

func (d osFS) Remove(name string) error {
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (d osFS) List() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (d osFS) SyncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", d.dir, err)
	}
	return nil
}

type osFile struct{ *os.File }

func (f osFile) Sync() error         { return datasync(f.File) }
func (f osFile) Allocate(size int64) { preallocate(f.File, size) }
func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
