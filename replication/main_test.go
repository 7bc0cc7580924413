package replication

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them,
// except this one: shard's awaitFuture waiter on a Raft future that
// hashicorp/raft v1.8.0 dropped at shutdown (its FSM goroutine returns
// without answering the batches still queued for it): one goroutine per
// dropped entry, by design (see shard's awaitFuture). Whether a node's
// shutdown drops any depends on timing.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"))
}
