package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// credentials returns the user and password of --user NAME[:PASSWORD] and
// --password (or their KVCTL_ variables), prompting for a missing password
// on a terminal.
func (a *app) credentials() (user, password string, err error) {
	if a.user == "" {
		if a.password != "" {
			return "", "", usagef("--password needs --user")
		}
		return "", "", nil
	}
	user, password, hasColon := strings.Cut(a.user, ":")
	if user == "" {
		return "", "", usagef("--user %q names no user", a.user)
	}
	if a.password != "" {
		if hasColon {
			return "", "", usagef("give the password in --user NAME:PASSWORD or --password, not both")
		}
		password = a.password
	}
	if password == "" && !hasColon {
		if password, err = a.promptSecret(fmt.Sprintf("Password of %s: ", user)); err != nil {
			return "", "", usagef("--user %s needs a password (--password, --user NAME:PASSWORD or KVCTL_PASSWORD): %v", user, err)
		}
	}
	return user, password, nil
}

// terminalFd returns stdin's descriptor when stdin is a terminal.
func (a *app) terminalFd() (int, bool) {
	f, ok := a.env.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// promptSecret reads a secret from the terminal without echo; it fails
// when stdin is not one.
func (a *app) promptSecret(prompt string) (string, error) {
	fd, ok := a.terminalFd()
	if !ok {
		return "", fmt.Errorf("stdin is not a terminal to prompt on")
	}
	fmt.Fprint(a.env.stderr, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(a.env.stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return string(b), nil
}

// newPassword is the password of user add and user passwd: the flag, else
// prompted twice on a terminal, else stdin's first line.
func (a *app) newPassword(cmd *cobra.Command, flag string) (string, error) {
	if cmd.Flags().Changed("password") {
		if flag == "" {
			return "", usagef("--password is empty; omit it for a certificate-only user")
		}
		return flag, nil
	}
	if _, ok := a.terminalFd(); ok {
		p, err := a.promptSecret("New password: ")
		if err != nil {
			return "", err
		}
		again, err := a.promptSecret("Again: ")
		if err != nil {
			return "", err
		}
		if p != again {
			return "", usagef("the passwords differ")
		}
		return p, nil
	}
	line, err := bufio.NewReader(a.env.stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" && err != nil {
		return "", usagef("no password on stdin (give --password, or --no-password for a certificate-only user)")
	}
	return line, nil
}

// authResult prints a mutation's note: its revision and, for a revocation,
// how long lagging nodes may still honour the old access.
func (a *app) authResult(r *kvpb.AuthResult) error {
	if a.out() == formatJSON {
		return writeJSONLine(a.env.stdout, map[string]any{
			"revision": r.GetRevision(), "changed": r.GetChanged(), "revokes": r.GetRevokes(),
			"revocation_bound_seconds": r.GetRevocationBoundSeconds(), "invalidated": r.GetInvalidated(), "message": r.GetMessage(),
		})
	}
	_, err := fmt.Fprintf(a.env.stdout, "OK: %s\n", r.GetMessage())
	return err
}

// authDo runs one Auth call with a connected client.
func (a *app) authDo(cmd *cobra.Command, op string, write bool, fn func(context.Context, kvpb.AuthClient, ...grpc.CallOption) error) error {
	return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
		return c.Auth(ctx, op, write, fn)
	})
}

// mutation is a command that changes the auth state and prints its note.
func (a *app) mutation(use, short, long string, args cobra.PositionalArgs, call func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error)) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Long: long, Args: args,
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			var res *kvpb.AuthResult
			err := a.authDo(cmd, strings.Fields(use)[0], true, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				res, err = call(ctx, c, args, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return a.authResult(res)
		}),
	}
}

func (a *app) authCmd() *cobra.Command {
	enable := a.mutation("enable", "Turn auth on (needs a user root with the root role)", `Turn auth on. A user named root holding the root role must exist:

  kvctl user add root
  kvctl user grant-role root root
  kvctl auth enable
  kvctl --user root auth status`, cobra.NoArgs,
		func(ctx context.Context, c kvpb.AuthClient, _ []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.AuthEnable(ctx, &kvpb.AuthEnableRequest{}, opts...)
			return r.GetResult(), err
		})
	disable := a.mutation("disable", "Turn auth off (root only)", "", cobra.NoArgs,
		func(ctx context.Context, c kvpb.AuthClient, _ []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.AuthDisable(ctx, &kvpb.AuthDisableRequest{}, opts...)
			return r.GetResult(), err
		})
	status := &cobra.Command{
		Use: "status", Short: "Show whether auth is on, its revision and revocation bound, and who you are", Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			var r *kvpb.AuthStatusResponse
			err := a.authDo(cmd, "auth status", false, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				r, err = c.AuthStatus(ctx, &kvpb.AuthStatusRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if a.out() == formatJSON {
				return writeJSONLine(a.env.stdout, map[string]any{"enabled": r.Enabled, "revision": r.Revision,
					"revocation_bound_seconds": r.RevocationBoundSeconds, "user": r.User})
			}
			_, err = fmt.Fprintf(a.env.stdout, "enabled: %s\nrevision: %d\nrevocation bound: %ds\nuser: %s\n", yesNo(r.Enabled), r.Revision, r.RevocationBoundSeconds, r.User)
			return err
		}),
	}
	return a.groupCmd("auth", "Turn auth on or off", enable, disable, status)
}

func (a *app) userCmd() *cobra.Command {
	var password string
	var noPassword bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user",
		Long: `Add a user. The password comes from --password, else a prompt when stdin is a
terminal, else stdin's first line. --no-password makes a user identified only
by a client certificate (URI SAN dialkv://user/NAME, or CN NAME).`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			p := ""
			if !noPassword {
				var err error
				if p, err = a.newPassword(cmd, password); err != nil {
					return err
				}
			}
			var res *kvpb.AuthResult
			err := a.authDo(cmd, "user add", true, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) error {
				r, err := c.UserAdd(ctx, &kvpb.UserAddRequest{Name: args[0], Password: p}, opts...)
				res = r.GetResult()
				return err
			})
			if err != nil {
				return err
			}
			return a.authResult(res)
		}),
	}
	add.Flags().StringVar(&password, "password", "", "the new user's password")
	add.Flags().BoolVar(&noPassword, "no-password", false, "a certificate-only user")
	add.MarkFlagsMutuallyExclusive("password", "no-password")

	var newPass string
	passwd := &cobra.Command{
		Use: "passwd NAME", Short: "Change a user's password (root, or the user)", Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			p, err := a.newPassword(cmd, newPass)
			if err != nil {
				return err
			}
			var res *kvpb.AuthResult
			err = a.authDo(cmd, "user passwd", true, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) error {
				r, err := c.UserChangePassword(ctx, &kvpb.UserChangePasswordRequest{Name: args[0], Password: p}, opts...)
				res = r.GetResult()
				return err
			})
			if err != nil {
				return err
			}
			return a.authResult(res)
		}),
	}
	passwd.Flags().StringVar(&newPass, "password", "", "the new password")

	del := a.mutation("delete NAME", "Delete a user (its tokens stop working)", "", cobra.ExactArgs(1),
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.UserDelete(ctx, &kvpb.UserDeleteRequest{Name: args[0]}, opts...)
			return r.GetResult(), err
		})
	grant := a.mutation("grant-role NAME ROLE", "Give a user a role", "", cobra.ExactArgs(2),
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.UserGrantRole(ctx, &kvpb.UserGrantRoleRequest{User: args[0], Role: args[1]}, opts...)
			return r.GetResult(), err
		})
	revoke := a.mutation("revoke-role NAME ROLE", "Take a role from a user", `Take a role from a user. The note printed says for how long, at most, a lagging
node may still honour the role.`, cobra.ExactArgs(2),
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.UserRevokeRole(ctx, &kvpb.UserRevokeRoleRequest{User: args[0], Role: args[1]}, opts...)
			return r.GetResult(), err
		})
	list := &cobra.Command{
		Use: "list", Short: "List the users", Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			var r *kvpb.UserListResponse
			err := a.authDo(cmd, "user list", false, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				r, err = c.UserList(ctx, &kvpb.UserListRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return a.printNames("users", r.Users)
		}),
	}
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a user's roles", Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			var r *kvpb.UserGetResponse
			err := a.authDo(cmd, "user get", false, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				r, err = c.UserGet(ctx, &kvpb.UserGetRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if a.out() == formatJSON {
				return writeJSONLine(a.env.stdout, map[string]any{"name": r.Name, "roles": r.Roles, "has_password": r.HasPassword})
			}
			_, err = fmt.Fprintf(a.env.stdout, "user: %s\nroles: %s\npassword: %s\n", r.Name, strings.Join(r.Roles, " "), yesNo(r.HasPassword))
			return err
		}),
	}
	return a.groupCmd("user", "Manage users", add, del, list, get, passwd, grant, revoke)
}

// printNames prints a list one per line, or as {"<what>": [...]}.
func (a *app) printNames(what string, names []string) error {
	if a.out() == formatJSON {
		if names == nil {
			names = []string{}
		}
		return writeJSONLine(a.env.stdout, map[string]any{what: names})
	}
	for _, n := range names {
		if _, err := fmt.Fprintln(a.env.stdout, n); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

// permissionArgs parses KEY [END] and --prefix into a permission.
func permissionArgs(args []string, prefix bool) (*kvpb.Permission, error) {
	p := &kvpb.Permission{Key: []byte(args[0]), Prefix: prefix}
	if len(args) > 1 {
		if prefix {
			return nil, fmt.Errorf("give KEY END or KEY --prefix, not both")
		}
		p.RangeEnd = []byte(args[1])
	}
	return p, nil
}

var accessNames = map[string]kvpb.Permission_Access{
	"read": kvpb.Permission_READ, "write": kvpb.Permission_WRITE, "readwrite": kvpb.Permission_READWRITE,
}

func (a *app) roleCmd() *cobra.Command {
	add := a.mutation("add NAME", "Add a role", "", cobra.ExactArgs(1),
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.RoleAdd(ctx, &kvpb.RoleAddRequest{Name: args[0]}, opts...)
			return r.GetResult(), err
		})
	del := a.mutation("delete NAME", "Delete a role (its users lose it)", "", cobra.ExactArgs(1),
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			r, err := c.RoleDelete(ctx, &kvpb.RoleDeleteRequest{Name: args[0]}, opts...)
			return r.GetResult(), err
		})
	var grantPrefix, revokePrefix bool
	grantArgs := func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(3, 4)(cmd, args); err != nil {
			return err
		}
		if _, ok := accessNames[args[1]]; !ok {
			return fmt.Errorf("access %q: want read, write or readwrite", args[1])
		}
		_, err := permissionArgs(args[2:], grantPrefix)
		return err
	}
	grant := a.mutation("grant-permission ROLE read|write|readwrite KEY [END]", "Let a role read or write a key, a prefix (--prefix) or [KEY, END)", "", grantArgs,
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			p, err := permissionArgs(args[2:], grantPrefix)
			if err != nil {
				return nil, err
			}
			p.Access = accessNames[args[1]]
			r, err := c.RoleGrantPermission(ctx, &kvpb.RoleGrantPermissionRequest{Role: args[0], Permission: p}, opts...)
			return r.GetResult(), err
		})
	grant.Flags().BoolVar(&grantPrefix, "prefix", false, "KEY is a prefix: every key starting with it")
	revoke := a.mutation("revoke-permission ROLE KEY [END]", "Remove a role's permission on a key, a prefix (--prefix) or [KEY, END)", `Remove a role's permission. The note printed says for how long, at most, a
lagging node may still honour the old permission.`, func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(2, 3)(cmd, args); err != nil {
			return err
		}
		_, err := permissionArgs(args[1:], revokePrefix)
		return err
	},
		func(ctx context.Context, c kvpb.AuthClient, args []string, opts ...grpc.CallOption) (*kvpb.AuthResult, error) {
			p, err := permissionArgs(args[1:], revokePrefix)
			if err != nil {
				return nil, err
			}
			r, err := c.RoleRevokePermission(ctx, &kvpb.RoleRevokePermissionRequest{Role: args[0], Permission: p}, opts...)
			return r.GetResult(), err
		})
	revoke.Flags().BoolVar(&revokePrefix, "prefix", false, "KEY is a prefix")
	list := &cobra.Command{
		Use: "list", Short: "List the roles", Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			var r *kvpb.RoleListResponse
			err := a.authDo(cmd, "role list", false, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				r, err = c.RoleList(ctx, &kvpb.RoleListRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return a.printNames("roles", r.Roles)
		}),
	}
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a role's permissions", Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			var r *kvpb.RoleGetResponse
			err := a.authDo(cmd, "role get", false, func(ctx context.Context, c kvpb.AuthClient, opts ...grpc.CallOption) (err error) {
				r, err = c.RoleGet(ctx, &kvpb.RoleGetRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return a.printRole(r)
		}),
	}
	return a.groupCmd("role", "Manage roles and their permissions", add, del, list, get, grant, revoke)
}

func accessName(x kvpb.Permission_Access) string {
	for n, v := range accessNames {
		if v == x {
			return n
		}
	}
	return x.String()
}

func (a *app) printRole(r *kvpb.RoleGetResponse) error {
	if a.out() == formatJSON {
		perms := []map[string]any{}
		for _, p := range r.Permissions {
			perms = append(perms, map[string]any{"access": accessName(p.Access), "key": rpctypes.Bytes(p.Key), "range_end": rpctypes.Bytes(p.RangeEnd), "prefix": p.Prefix})
		}
		return writeJSONLine(a.env.stdout, map[string]any{"name": r.Name, "permissions": perms})
	}
	if _, err := fmt.Fprintf(a.env.stdout, "role: %s\n", r.Name); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	for _, p := range r.Permissions {
		keys := fmt.Sprintf("key %q", p.Key)
		switch {
		case p.Prefix:
			keys = fmt.Sprintf("prefix %q", p.Key)
		case len(p.RangeEnd) > 0:
			keys = fmt.Sprintf("[%q, %q)", p.Key, p.RangeEnd)
		}
		if _, err := fmt.Fprintf(a.env.stdout, "  %s %s\n", accessName(p.Access), keys); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}
