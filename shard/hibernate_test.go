package shard

import (
	"testing"
	"time"
)

func TestSleepDelays(t *testing.T) {
	tests := []struct {
		commit           time.Duration
		leader, follower time.Duration
	}{
		{commit: 10 * time.Millisecond, leader: 150 * time.Millisecond, follower: 450 * time.Millisecond},
		{commit: 50 * time.Millisecond, leader: 150 * time.Millisecond, follower: 450 * time.Millisecond},
		{commit: 100 * time.Millisecond, leader: 250 * time.Millisecond, follower: 550 * time.Millisecond},
		{commit: 250 * time.Millisecond, leader: 550 * time.Millisecond, follower: 850 * time.Millisecond},
	}
	for _, tt := range tests {
		l, f := sleepDelays(tt.commit)
		if l != tt.leader || f != tt.follower {
			t.Errorf("sleepDelays(%v) = %v, %v; want %v, %v", tt.commit, l, f, tt.leader, tt.follower)
		}
		// The leader must outlast the latest append that tells a follower
		// the entry committed.
		if l <= 2*tt.commit {
			t.Errorf("sleepDelays(%v): the leader sleeps after %v, before its followers surely heard", tt.commit, l)
		}
	}
}

func TestTimingValidate(t *testing.T) {
	base := DefaultTiming()
	tests := []struct {
		name  string
		tweak func(*Timing)
		ok    bool
	}{
		{"default", func(*Timing) {}, true},
		{"commit a quarter of heartbeat", func(t *Timing) { t.Commit = t.Heartbeat / 4 }, true},
		{"commit over a quarter of heartbeat", func(t *Timing) { t.Commit = t.Heartbeat/4 + time.Millisecond }, false},
		{"zero commit", func(t *Timing) { t.Commit = 0 }, false},
		{"negative heartbeat", func(t *Timing) { t.Heartbeat = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm := base
			tt.tweak(&tm)
			if err := tm.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
