package jepsen

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// NemAuthRevoke revokes WorkloadRole from WorkloadUser (kvctl user
// revoke-role) once or twice a run, holds the revocation past the bound
// the server answered with, and grants the role back. It needs auth, so
// TLS; `all` includes it only then. It runs on its own timeline beside the
// schedule's other faults, so a revocation may meet a partition or a kill.
const NemAuthRevoke = "auth-revoke"

// OpAuth is an auth change the nemesis made, recorded with Process
// NemesisProcess: Key the user, Value "armed ...", "revoke <role>" or
// "grant <role>"; Start when the call was made, End when it was
// acknowledged; Type ok (acknowledged) or info (never acknowledged: its
// effect is unknown); a revoke's MaxStaleness is its revocation bound in
// milliseconds (how long after End a lagging node may still honour the
// role), the field bounded reads use for their own staleness bound.
const OpAuth = "auth"

// Values of OpAuth events.
const (
	authArmed  = "armed"
	authRevoke = "revoke " + WorkloadRole
	authGrant  = "grant " + WorkloadRole
)

// Timing of the auth-revoke nemesis.
const (
	// authHoldPastBound is how long a revocation is held after its bound
	// has passed: the window in which every op must be refused.
	authHoldPastBound = 4 * time.Second
	// authTwiceFrom: runs at least this long revoke twice, shorter ones
	// once (the other checkers need the workload's successes).
	authTwiceFrom = 2 * time.Minute
	// authAttempts bounds the tries of one revoke or grant (3s each,
	// through the nodes in turn), so a partition or a kill cannot stop the
	// role from coming back.
	authAttempts = 20
)

// authRevoker starts the auth-revoke nemesis when kinds hold it, and
// returns the other kinds and a function that waits until the role is
// back. The revocations fall at even fractions of the time left until
// ctx's deadline.
func (e *nemesisEnv) authRevoker(ctx context.Context, kinds []string) ([]string, func()) {
	if !slices.Contains(kinds, NemAuthRevoke) {
		return kinds, func() {}
	}
	rest := slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k == NemAuthRevoke })
	deadline, ok := ctx.Deadline()
	if !ok {
		e.logf("jepsen: nemesis %s needs a run with a deadline; not started", NemAuthRevoke)
		return rest, func() {}
	}
	left := time.Until(deadline)
	n := 1
	if left >= authTwiceFrom {
		n = 2
	}
	now := e.rec.Now()
	e.rec.Add(Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: fmt.Sprintf("%s: %d revocations of role %s", authArmed, n, WorkloadRole), Start: now, End: now, Type: OK})
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for k := range n {
			at := start.Add(left * time.Duration(k+1) / time.Duration(n+1))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(at)):
			}
			e.revokeOnce(ctx)
		}
	}()
	return rest, func() { <-done }
}

// revokeOnce revokes the role, holds it revoked until authHoldPastBound
// after the bound (or ctx's end), and grants it back whatever ctx says.
func (e *nemesisEnv) revokeOnce(ctx context.Context) {
	desc := fmt.Sprintf("revoke role %s from %s", WorkloadRole, WorkloadUser)
	fid := e.rec.FaultStart(NemAuthRevoke, desc)
	e.logf("jepsen: nemesis %s: %s", NemAuthRevoke, desc)
	// The bound of the state; the answer's, when there is one.
	bound := e.authBound(ctx)
	inv := e.rec.Now()
	err := authCall(ctx, e.cs, authAttempts, revokeRole(WorkloadUser, WorkloadRole, &bound))
	op := Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authRevoke, Start: inv, End: e.rec.Now(), Type: OK, MaxStaleness: bound.Milliseconds()}
	if err != nil {
		op.Type, op.Error = Info, truncate(err.Error(), 300)
	}
	e.rec.Add(op)
	if err != nil {
		e.logf("jepsen: nemesis %s: revoke never acknowledged: %v", NemAuthRevoke, err)
	} else {
		e.logf("jepsen: nemesis %s: revoked; lagging nodes may honour the role for %v more", NemAuthRevoke, bound)
		select {
		case <-ctx.Done():
		case <-time.After(bound + authHoldPastBound):
		}
	}
	// The role comes back even after the run's end: the final state is
	// read as root, but the cluster is left as it was set up.
	gctx, cancel := context.WithTimeout(context.Background(), authAttempts*4*time.Second)
	defer cancel()
	grant := grantRole(WorkloadUser, WorkloadRole)
	grant.alreadyFirst = true // after an unacknowledged revoke the role may still be there
	inv = e.rec.Now()
	err = authCall(gctx, e.cs, authAttempts, grant)
	op = Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authGrant, Start: inv, End: e.rec.Now(), Type: OK}
	if err != nil {
		op.Type, op.Error = Info, truncate(err.Error(), 300)
		e.logf("jepsen: nemesis %s: grant never acknowledged: %v", NemAuthRevoke, err)
	}
	e.rec.Add(op)
	e.rec.FaultEnd(fid)
	e.logf("jepsen: nemesis healed: %s (role granted back)", desc)
}

// authBound asks the nodes in turn for the revocation bound, the
// package's default if none answers.
func (e *nemesisEnv) authBound(ctx context.Context) time.Duration {
	for _, i := range e.liveNodes() {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := kvpb.NewAuthClient(e.cs.grpc[i]).AuthStatus(sctx, &kvpb.AuthStatusRequest{})
		cancel()
		if err == nil && st.GetRevocationBoundSeconds() > 0 {
			return time.Duration(st.GetRevocationBoundSeconds()) * time.Second
		}
	}
	return auth.DefaultRevocationBound
}
