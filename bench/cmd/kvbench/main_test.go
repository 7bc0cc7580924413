package main

import (
	"io"
	"testing"
	"time"

	"github.com/dialkv/dialkv/bench/workload"
)

func TestParseFlags_CountedRunsGetAnHourCap(t *testing.T) {
	o, err := parseFlags([]string{"-workload", "load", "-keys", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Duration != countedCap {
		t.Fatalf("load without -duration: cap %v, want %v", o.cfg.Duration, countedCap)
	}
	o, err = parseFlags([]string{"-ops", "10", "-duration", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Duration != 3*time.Second {
		t.Fatalf("explicit -duration overridden: %v", o.cfg.Duration)
	}
}

func TestParseFlags_EtcdMapsLevelsAndRefusesOthers(t *testing.T) {
	o, err := parseFlags([]string{"-system", "etcd", "-workload", "get", "-consistency", "s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Level != workload.Stale || o.endpoints != defaultEndpoints["etcd"] {
		t.Fatalf("level %v endpoints %q", o.cfg.Level, o.endpoints)
	}
	for _, args := range [][]string{
		{"-system", "etcd", "-consistency", "bounded"},
		{"-system", "zookeeper"},
		{"-conns", "5", "-clients", "2"},
		{"-workload", "scan"},
		{"-workload", "txn", "-txn-keys", "0"},
		{"-workload", "txn", "-txn-keys", "4", "-clients", "64", "-keys", "255"},
		{"stray"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestParseFlags_TxnTakesItsKeyCount(t *testing.T) {
	o, err := parseFlags([]string{"-system", "etcd", "-workload", "txn", "-txn-keys", "4", "-clients", "64", "-keys", "256"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Workload != workload.Txn || o.cfg.TxnKeys != 4 {
		t.Fatalf("workload %v with %d keys per transaction, want txn with 4", o.cfg.Workload, o.cfg.TxnKeys)
	}
}
