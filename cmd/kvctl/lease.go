package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func (a *app) leaseCmd() *cobra.Command {
	return a.groupCmd("lease", "Grant, keep alive, revoke and inspect leases",
		a.leaseGrantCmd(), a.leaseKeepAliveCmd(), a.leaseRevokeCmd(), a.leaseListCmd(), a.leaseTTLCmd())
}

// parseLeaseID reads a lease id as kvctl prints it: decimal.
func parseLeaseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("lease id %q: want a positive decimal integer, as lease grant prints it", s)
	}
	return id, nil
}

// leaseJSON is a lease's id and TTL (seconds) in JSON.
type leaseJSON struct {
	ID  int64 `json:"id"`
	TTL int64 `json:"ttl"`
}

func (a *app) leaseGrantCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "grant TTL",
		Short: "Grant a lease of TTL seconds",
		Long: `Grant a lease that lives TTL seconds (1..2147483648) without a keepalive,
and print its id: "lease ID granted with TTL(10s)"; json prints
{"id": ID, "ttl": 10}. Attach keys with put --lease ID.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			ttl, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || ttl < 1 {
				return usagef("lease grant: TTL %q: want a positive number of seconds", args[0])
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Grant(ctx, time.Duration(ttl)*time.Second)
				if err != nil {
					return err
				}
				return a.printLease(resp.GetId(), resp.GetTtl(), "lease %d granted with TTL(%ds)\n")
			})
		}),
	}
}

// printLease prints a lease's id and TTL: text with line (the id, then
// the TTL), or JSON.
func (a *app) printLease(id, ttl int64, line string) error {
	if a.out() == formatJSON {
		return writeJSONLine(a.env.stdout, leaseJSON{ID: id, TTL: ttl})
	}
	if _, err := fmt.Fprintf(a.env.stdout, line, id, ttl); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (a *app) leaseKeepAliveCmd() *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "keepalive ID [--once]",
		Short: "Keep a lease alive until interrupted",
		Long: `Renew lease ID every third of its TTL until interrupted (or for --timeout,
when given), printing "lease ID keepalived with TTL(10)" per renewal (json:
{"id", "ttl"}). With --once, renew once. A lease that has ended exits 4.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			const line = "lease %d keepalived with TTL(%d)\n"
			if once {
				return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					resp, err := c.KeepAliveOnce(ctx, id)
					if err != nil {
						return err
					}
					return a.printLease(resp.GetId(), resp.GetTtl(), line)
				})
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if cmd.Flags().Changed("timeout") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, a.timeout)
				defer cancel()
			}
			for ka := range c.KeepAlive(ctx, id) {
				if ka.Err != nil {
					if stoppedBy(ctx, ka.Err) {
						return nil
					}
					return ka.Err
				}
				if err := a.printLease(ka.Resp.GetId(), ka.Resp.GetTtl(), line); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&once, "once", false, "renew once and exit")
	return cmd
}

func (a *app) leaseRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "End a lease now and delete its keys",
		Long: `End lease ID now and delete every key attached to it. Prints "lease ID
revoked"; json prints {"id": ID, "keys_deleted": N}. A lease that has
already ended exits 4.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Revoke(ctx, id)
				if err != nil {
					return err
				}
				if a.out() == formatJSON {
					return writeJSONLine(a.env.stdout, struct {
						ID          int64 `json:"id"`
						KeysDeleted int64 `json:"keys_deleted"`
					}{id, resp.GetKeysDeleted()})
				}
				if _, err := fmt.Fprintf(a.env.stdout, "lease %d revoked\n", id); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
				return nil
			})
		}),
	}
}

func (a *app) leaseListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the live leases",
		Long: `List the live leases: "found N leases" and their ids, one per line; table
adds their granted and remaining TTLs; json prints one object
{"leases": [{"id", "granted_ttl", "ttl"}]}.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Leases(ctx)
				if err != nil {
					return err
				}
				return a.printLeases(resp.GetLeases())
			})
		}),
	}
}

func (a *app) printLeases(ls []*kvpb.LeaseStatus) error {
	w := a.env.stdout
	switch a.out() {
	case formatJSON:
		type lease struct {
			ID         int64 `json:"id"`
			GrantedTTL int64 `json:"granted_ttl"`
			TTL        int64 `json:"ttl"`
		}
		out := struct {
			Leases []lease `json:"leases"`
		}{Leases: make([]lease, len(ls))}
		for i, l := range ls {
			out.Leases[i] = lease{l.GetId(), l.GetGrantedTtl(), l.GetTtl()}
		}
		return writeJSONLine(w, out)
	case formatTable:
		t := newTable(w, "ID", "GRANTED_TTL", "TTL")
		for _, l := range ls {
			t.row(strconv.FormatInt(l.GetId(), 10), strconv.FormatInt(l.GetGrantedTtl(), 10), strconv.FormatInt(l.GetTtl(), 10))
		}
		return t.flush()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "found %d leases\n", len(ls))
	for _, l := range ls {
		fmt.Fprintf(&b, "%d\n", l.GetId())
	}
	if _, err := fmt.Fprint(w, b.String()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (a *app) leaseTTLCmd() *cobra.Command {
	var keys bool
	cmd := &cobra.Command{
		Use:   "ttl ID [--keys]",
		Short: "Show a lease's TTL and, with --keys, its keys",
		Long: `Print "lease ID granted with TTL(10s), remaining(7s)", with --keys followed
by ", attached keys([a b])"; json prints {"id", "granted_ttl", "ttl",
"keys"}. A lease that has ended exits 4.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.TimeToLive(ctx, id, keys)
				if err != nil {
					return err
				}
				return a.printTTL(resp, keys)
			})
		}),
	}
	cmd.Flags().BoolVar(&keys, "keys", false, "list the keys attached to the lease")
	return cmd
}

func (a *app) printTTL(resp *kvpb.LeaseTimeToLiveResponse, withKeys bool) error {
	if a.out() == formatJSON {
		out := struct {
			ID         int64            `json:"id"`
			GrantedTTL int64            `json:"granted_ttl"`
			TTL        int64            `json:"ttl"`
			Keys       []rpctypes.Bytes `json:"keys,omitempty"`
		}{ID: resp.GetId(), GrantedTTL: resp.GetGrantedTtl(), TTL: resp.GetTtl()}
		if withKeys {
			out.Keys = make([]rpctypes.Bytes, len(resp.GetKeys()))
			for i, k := range resp.GetKeys() {
				out.Keys[i] = k
			}
		}
		return writeJSONLine(a.env.stdout, out)
	}
	line := fmt.Sprintf("lease %d granted with TTL(%ds), remaining(%ds)", resp.GetId(), resp.GetGrantedTtl(), resp.GetTtl())
	if withKeys {
		ks := make([]string, len(resp.GetKeys()))
		for i, k := range resp.GetKeys() {
			ks[i] = printable(string(k))
		}
		line += fmt.Sprintf(", attached keys([%s])", strings.Join(ks, " "))
	}
	if _, err := fmt.Fprintln(a.env.stdout, line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
