//go:build !linux

package raftstore

import "os"

func datasync(f *os.File) error { return f.Sync() }

func preallocate(*os.File, int64) {}
