//go:build race

package wal

// raceEnabled: the race detector inflates every allocation, so heap
// measurements mean nothing under it.
const raceEnabled = true
