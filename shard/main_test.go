package shard

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them,
// except this one:
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// awaitFuture's waiter on a Raft future that hashicorp/raft v1.8.0
		// dropped at shutdown (the FSM goroutine returns without
		// answering the batches still queued for it): one goroutine per
		// dropped entry, by design (see awaitFuture).
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"),
	)
}
