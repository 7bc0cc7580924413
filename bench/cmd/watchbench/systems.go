package main

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
)

// The systems watchbench measures, in the order it runs them.
const (
	sysDialkv = "dialkv"
	sysEtcd   = "etcd"
)

// event is one watch event, whichever system sent it.
type event struct {
	put        bool
	key, value []byte
	// group and index order the events: dialkv's range and Raft index
	// (an order per range), etcd's single key space (group 0) and
	// revision.
	group, index uint64
}

func (e event) kind() string {
	if e.put {
		return "PUT"
	}
	return "DELETE"
}

// watchStream is one open watch on the prefix, on a connection of its own.
type watchStream interface {
	// recv blocks for the next message and returns its events (none for
	// a message without any, such as etcd's "created"), valid until the
	// next call.
	recv() ([]event, error)
	// close closes the stream's connection.
	close()
}

// keepAliveStream is one lease keepalive stream.
type keepAliveStream interface {
	send(id int64) error
	// recv returns the TTL the lease now has (0 or less: it ended).
	recv() (int64, error)
	closeSend() error
}

// system is what the phases need of a system under test: writes through
// its Go client, and raw gRPC streams for watches and leases, goroutine or
// watcher i on node i mod the nodes.
type system interface {
	put(ctx context.Context, key, val []byte) error
	// watch opens a watch on prefix at node (an index of the endpoints);
	// the first message comes once the watch is in place.
	watch(ctx context.Context, node int) (watchStream, error)
	grant(ctx context.Context, node int, ttl int64) (int64, error)
	keepAlive(ctx context.Context, node int) (keepAliveStream, error)
	close() error
}

// dial opens a plain gRPC connection to one endpoint.
func dial(endpoint string) (*grpc.ClientConn, error) {
	return grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// dialWatch opens a watcher's connection. A static window of watchWindow
// bytes replaces gRPC's default of 64 KiB grown by bandwidth probes: with
// the default, a watcher receiving 10 KiB messages answered most of them
// with a window update and a probe ping, each a write the server then
// read and answered.
func dialWatch(endpoint string) (*grpc.ClientConn, error) {
	return grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(watchWindow), grpc.WithInitialConnWindowSize(watchWindow))
}

const watchWindow = 4 << 20

// dialAll opens one connection per endpoint, for the lease goroutines.
func dialAll(endpoints []string) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, len(endpoints))
	for _, ep := range endpoints {
		cc, err := dial(ep)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

func closeAll(conns []*grpc.ClientConn) error {
	var errs []error
	for _, cc := range conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// dialkvSystem writes through dialkv's Go client (each put routed to its
// range's leader) and watches and renews leases over kvpb's streams.
type dialkvSystem struct {
	endpoints []string
	cli       *client.Client
	conns     []*grpc.ClientConn
}

func newDialkvSystem(endpoints []string) (*dialkvSystem, error) {
	cli, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		return nil, err
	}
	conns, err := dialAll(endpoints)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &dialkvSystem{endpoints: endpoints, cli: cli, conns: conns}, nil
}

func (s *dialkvSystem) put(ctx context.Context, key, val []byte) error {
	_, err := s.cli.Put(ctx, key, val)
	return err
}

func (s *dialkvSystem) watch(ctx context.Context, node int) (watchStream, error) {
	cc, err := dialWatch(s.endpoints[node%len(s.endpoints)])
	if err != nil {
		return nil, err
	}
	stream, err := kvpb.NewKVClient(cc).Watch(ctx, &kvpb.WatchRequest{Prefix: []byte(prefix)}, grpc.ForceCodecV2(newRawCodec()))
	if err != nil {
		cc.Close()
		return nil, err
	}
	return &dialkvWatch{cc: cc, stream: stream}, nil
}

type dialkvWatch struct {
	cc     *grpc.ClientConn
	stream kvpb.KV_WatchClient
	msg    rawMsg
	events []event
}

// recv reads the next message's bytes (rawwatch.go); its events point
// into them and are valid until the next recv.
func (w *dialkvWatch) recv() ([]event, error) {
	if err := w.stream.RecvMsg(&w.msg); err != nil {
		return nil, err
	}
	var err error
	w.events, err = parseDialkvWatch(w.msg.buf, w.events[:0])
	return w.events, err
}

func (w *dialkvWatch) close() { w.cc.Close() }

func (s *dialkvSystem) grant(ctx context.Context, node int, ttl int64) (int64, error) {
	resp, err := kvpb.NewLeaseClient(s.conns[node%len(s.conns)]).Grant(ctx, &kvpb.LeaseGrantRequest{Ttl: ttl})
	if err != nil {
		return 0, err
	}
	return resp.Id, nil
}

func (s *dialkvSystem) keepAlive(ctx context.Context, node int) (keepAliveStream, error) {
	st, err := kvpb.NewLeaseClient(s.conns[node%len(s.conns)]).KeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	return dialkvKeepAlive{st}, nil
}

type dialkvKeepAlive struct{ st kvpb.Lease_KeepAliveClient }

func (k dialkvKeepAlive) send(id int64) error { return k.st.Send(&kvpb.LeaseKeepAliveRequest{Id: id}) }
func (k dialkvKeepAlive) closeSend() error    { return k.st.CloseSend() }

func (k dialkvKeepAlive) recv() (int64, error) {
	resp, err := k.st.Recv()
	if err != nil {
		return 0, err
	}
	return resp.Ttl, nil
}

func (s *dialkvSystem) close() error { return errors.Join(s.cli.Close(), closeAll(s.conns)) }

// etcdSystem writes through etcd's Go client (clientv3, which spreads
// requests over the members; followers forward writes to the leader), as
// bench-compare's etcd driver does, and watches and renews leases over
// etcd's own gRPC streams, as the dialkv side does over kvpb's.
type etcdSystem struct {
	endpoints []string
	cli       *clientv3.Client
	conns     []*grpc.ClientConn
}

func newEtcdSystem(ctx context.Context, endpoints []string) (*etcdSystem, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: readyTimeout, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		return nil, err
	}
	conns, err := dialAll(endpoints)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &etcdSystem{endpoints: endpoints, cli: cli, conns: conns}, nil
}

func (s *etcdSystem) put(ctx context.Context, key, val []byte) error {
	_, err := s.cli.Put(ctx, string(key), string(val))
	return err
}

func (s *etcdSystem) watch(ctx context.Context, node int) (watchStream, error) {
	cc, err := dialWatch(s.endpoints[node%len(s.endpoints)])
	if err != nil {
		return nil, err
	}
	stream, err := pb.NewWatchClient(cc).Watch(ctx, grpc.ForceCodecV2(newRawCodec()))
	if err == nil {
		// From the current revision on, as dialkv's watch from its
		// applied index; the "created" answer is the first message.
		err = stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)),
		}}})
	}
	if err != nil {
		cc.Close()
		return nil, err
	}
	return &etcdWatch{cc: cc, stream: stream}, nil
}

type etcdWatch struct {
	cc     *grpc.ClientConn
	stream pb.Watch_WatchClient
	msg    rawMsg
	events []event
}

// recv reads the next message's bytes (rawwatch.go); its events point
// into them and are valid until the next recv.
func (w *etcdWatch) recv() ([]event, error) {
	if err := w.stream.RecvMsg(&w.msg); err != nil {
		return nil, err
	}
	var err error
	w.events, err = parseEtcdWatch(w.msg.buf, w.events[:0])
	return w.events, err
}

func (w *etcdWatch) close() { w.cc.Close() }

func (s *etcdSystem) grant(ctx context.Context, node int, ttl int64) (int64, error) {
	resp, err := pb.NewLeaseClient(s.conns[node%len(s.conns)]).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

func (s *etcdSystem) keepAlive(ctx context.Context, node int) (keepAliveStream, error) {
	st, err := pb.NewLeaseClient(s.conns[node%len(s.conns)]).LeaseKeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	return etcdKeepAlive{st}, nil
}

type etcdKeepAlive struct{ st pb.Lease_LeaseKeepAliveClient }

func (k etcdKeepAlive) send(id int64) error { return k.st.Send(&pb.LeaseKeepAliveRequest{ID: id}) }
func (k etcdKeepAlive) closeSend() error    { return k.st.CloseSend() }

func (k etcdKeepAlive) recv() (int64, error) {
	resp, err := k.st.Recv()
	if err != nil {
		return 0, err
	}
	return resp.TTL, nil
}

func (s *etcdSystem) close() error { return errors.Join(s.cli.Close(), closeAll(s.conns)) }
