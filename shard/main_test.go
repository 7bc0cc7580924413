package shard

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them,
// except these:
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// awaitFuture's waiter on a Raft future that hashicorp/raft v1.8.0
		// dropped at shutdown (the FSM goroutine returns without
		// answering the batches still queued for it): one goroutine per
		// dropped entry, by design (see awaitFuture).
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"),
		// TestAwaitFuture's fake future, which the cases that close stop or
		// cancel ctx never answer, so awaitFuture's waiter on it stays.
		// The test should answer it when it ends; then this can go.
		goleak.IgnoreTopFunction("github.com/dialkv/dialkv/shard.blockedFuture.Error"),
	)
}
