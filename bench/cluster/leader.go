package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Leader names the member that leads: for dialkv the leader of every range
// as the first member sees it (several names when ranges differ), for etcd
// the Raft leader. It is for reports, so benchmarks can say whether clients
// talked to the leader or to a follower that forwards.
func (c *Cluster) Leader(ctx context.Context) (string, error) {
	if c.System == "etcd" {
		return c.etcdLeader(ctx)
	}
	return c.dialkvLeader(ctx)
}

func (c *Cluster) dialkvLeader(ctx context.Context) (string, error) {
	if len(c.HTTPAddrs) == 0 {
		return "", fmt.Errorf("cluster: no HTTP address")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddrs[0]+"/v1/cluster/status", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("cluster status: %s", resp.Status)
	}
	var st struct {
		Node struct {
			Ranges []struct {
				Leader string `json:"leader"`
			} `json:"ranges"`
		} `json:"node"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return "", fmt.Errorf("cluster status: %w", err)
	}
	var leaders []string
	for _, r := range st.Node.Ranges {
		if r.Leader != "" && !slices.Contains(leaders, r.Leader) {
			leaders = append(leaders, r.Leader)
		}
	}
	if len(leaders) == 0 {
		return "", fmt.Errorf("cluster status names no leader")
	}
	slices.Sort(leaders)
	return strings.Join(leaders, ","), nil
}

func (c *Cluster) etcdLeader(ctx context.Context) (string, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: requestTimeout, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	for i, ep := range c.Endpoints {
		sctx, cancel := context.WithTimeout(ctx, requestTimeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			continue
		}
		if st.Header.MemberId == st.Leader {
			return c.Procs[i].Name, nil
		}
	}
	return "", fmt.Errorf("no etcd member says it leads")
}
