package jepsen

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The client port is the boundary of what a client can do: it must not
// serve the node-to-node RPCs (two DropReplica calls through it used to
// delete two of a range's three replicas), nor trust the metadata a node
// sets when it forwards a request.
func TestProcess_ClientPortServesNoNodeToNodeRPCs(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, err := c.LeaderOf(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	dataRange := rangeFor(st, "a").GetId()

	conns := make([]*grpc.ClientConn, c.N())
	for i, addr := range c.GRPCAddrs() {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}

	t.Run("reflection lists only client services", func(t *testing.T) {
		stream, err := reflectpb.NewServerReflectionClient(conns[0]).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"kv.v1.KV", "kv.v1.Cluster", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v; %s is missing", names, want)
			}
		}
		if slices.Contains(names, "kv.v1.Internal") {
			t.Errorf("reflection on the client port lists kv.v1.Internal: %v", names)
		}
	})

	t.Run("every Internal method is unimplemented", func(t *testing.T) {
		for i, cc := range conns {
			for _, m := range kvpb.Internal_ServiceDesc.Methods {
				var req any = &emptypb.Empty{}
				if m.MethodName == "DropReplica" {
					req = &kvpb.DropReplicaRequest{RangeId: dataRange}
				}
				err := cc.Invoke(ctx, "/kv.v1.Internal/"+m.MethodName, req, &emptypb.Empty{})
				if status.Code(err) != codes.Unimplemented {
					t.Errorf("%s: Internal/%s on the client port: %v; want Unimplemented", c.ID(i), m.MethodName, err)
				}
			}
		}
	})

	t.Run("forged forwarding metadata is ignored", func(t *testing.T) {
		follower := (leader + 1) % c.N()
		// A request marked as forwarded as often as allowed would be
		// refused by a follower (NOT_LEADER) if the mark were trusted.
		fctx := metadata.AppendToOutgoingContext(ctx, rpctypes.ForwardedHeader, "2", rpctypes.MetaHopsHeader, "2")
		kv := kvpb.NewKVClient(conns[follower])
		if _, err := kv.Put(fctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("forged")}); err != nil {
			t.Fatalf("put through follower %s with forged forwarding metadata: %v", c.ID(follower), err)
		}
		got, err := kvpb.NewKVClient(conns[leader]).Get(ctx, &kvpb.GetRequest{Key: []byte("a")})
		if err != nil || string(got.GetKv().GetValue()) != "forged" {
			t.Fatalf("get a = %q, %v; want forged", got.GetKv().GetValue(), err)
		}
	})

	// Nothing above removed a replica: every node still holds the data
	// range, and a linearizable read through each node answers.
	for i := range c.N() {
		st, err := c.Status(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if r := rangeFor(st, "a"); r == nil || r.GetId() != dataRange {
			t.Errorf("%s no longer hosts range %d", c.ID(i), dataRange)
		}
		if _, err := kvpb.NewKVClient(conns[i]).Get(ctx, &kvpb.GetRequest{Key: []byte("a")}); err != nil {
			t.Errorf("get through %s: %v", c.ID(i), err)
		}
	}
}
