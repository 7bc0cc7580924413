package api

import (
	"context"
	"fmt"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// The Auth service. Authenticate and AuthStatus are open; every other
// method needs the root role once auth is enabled (before that, anyone
// may set users and roles up, as in etcd), except that a user may change
// their own password.

// errNoAuth answers Auth calls on a service built without SetAuth.
func errNoAuth() error { return invalid("this node serves no auth (built without an auth backend)") }

// authCall runs an Auth method: metrics, deadline and error table as run
// does, and the admin check first unless open.
func authCall[Req, Resp any](s *Service, ctx context.Context, method string, kind opKind, req Req, allowed func(ctx context.Context, r Req) error, call func(context.Context, Req) (Resp, error)) (Resp, error) {
	return run(s, ctx, method, kind, req, func(Req) error {
		if s.auth == nil {
			return errNoAuth()
		}
		return nil
	}, func(ctx context.Context, r Req) (Resp, error) {
		if allowed != nil {
			if err := allowed(ctx, r); err != nil {
				var zero Resp
				return zero, err
			}
		}
		return call(ctx, r)
	})
}

// adminOnly is the check of the Auth methods that change or list users
// and roles.
func adminOnly[Req any](s *Service) func(context.Context, Req) error {
	return func(ctx context.Context, _ Req) error { return s.authorizeAdmin(ctx, auth.VerbAuth) }
}

// mutate applies a mutation built by build (which may hash a password:
// that happens here, before the compare-and-swap) and describes it.
func (s *Service) mutate(ctx context.Context, build func() (auth.Mutation, error)) (*kvpb.AuthResult, error) {
	m, err := build()
	if err != nil {
		return nil, err
	}
	res, err := s.auth.Mutate(ctx, m)
	if err != nil {
		return nil, err
	}
	st, _ := s.auth.Check(time.Now())
	return &kvpb.AuthResult{
		Revision: res.Revision, Changed: res.Changed, Invalidated: res.Invalidated, Revokes: res.Revokes,
		RevocationBoundSeconds: uint32(st.RevocationBound() / time.Second), Message: res.String(),
	}, nil
}

func (s *Service) hashed(password string) ([]byte, error) {
	if password == "" {
		return nil, nil // a certificate-only user
	}
	if s.passwordCost != 0 {
		return auth.HashPasswordCost(password, s.passwordCost)
	}
	return auth.HashPassword(password)
}

func (s *Service) Authenticate(ctx context.Context, req *kvpb.AuthenticateRequest) (*kvpb.AuthenticateResponse, error) {
	return authCall(s, ctx, "Authenticate", opRead, req, nil, func(ctx context.Context, r *kvpb.AuthenticateRequest) (*kvpb.AuthenticateResponse, error) {
		st, err := s.auth.Check(time.Now())
		if err != nil {
			return nil, err
		}
		if err := st.Authenticate(r.User, r.Password); err != nil {
			return nil, err
		}
		tok, exp, err := s.issuer.Issue(st, r.User)
		if err != nil {
			return nil, err
		}
		return &kvpb.AuthenticateResponse{Token: tok, ExpiresUnix: exp.Unix()}, nil
	})
}

func (s *Service) AuthStatus(ctx context.Context, req *kvpb.AuthStatusRequest) (*kvpb.AuthStatusResponse, error) {
	return authCall(s, ctx, "AuthStatus", opRead, req, nil, func(ctx context.Context, _ *kvpb.AuthStatusRequest) (*kvpb.AuthStatusResponse, error) {
		st, err := s.auth.Check(time.Now())
		if err != nil {
			return nil, err
		}
		resp := &kvpb.AuthStatusResponse{Enabled: st.Enabled(), Revision: st.Revision(), RevocationBoundSeconds: uint32(st.RevocationBound() / time.Second)}
		if st.Enabled() {
			// Credentials are optional here; the answer names them when
			// they are good.
			if user, err := s.identify(ctx, st); err == nil {
				resp.User = user
			}
		}
		return resp, nil
	})
}

func (s *Service) AuthEnable(ctx context.Context, req *kvpb.AuthEnableRequest) (*kvpb.AuthEnableResponse, error) {
	return authCall(s, ctx, "AuthEnable", opWrite, req, adminOnly[*kvpb.AuthEnableRequest](s), func(ctx context.Context, _ *kvpb.AuthEnableRequest) (*kvpb.AuthEnableResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) { return auth.Mutation{Kind: auth.MutEnable}, nil })
		return &kvpb.AuthEnableResponse{Result: res}, err
	})
}

func (s *Service) AuthDisable(ctx context.Context, req *kvpb.AuthDisableRequest) (*kvpb.AuthDisableResponse, error) {
	return authCall(s, ctx, "AuthDisable", opWrite, req, adminOnly[*kvpb.AuthDisableRequest](s), func(ctx context.Context, _ *kvpb.AuthDisableRequest) (*kvpb.AuthDisableResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) { return auth.Mutation{Kind: auth.MutDisable}, nil })
		return &kvpb.AuthDisableResponse{Result: res}, err
	})
}

func (s *Service) UserAdd(ctx context.Context, req *kvpb.UserAddRequest) (*kvpb.UserAddResponse, error) {
	return authCall(s, ctx, "UserAdd", opWrite, req, adminOnly[*kvpb.UserAddRequest](s), func(ctx context.Context, r *kvpb.UserAddRequest) (*kvpb.UserAddResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			h, err := s.hashed(r.Password)
			return auth.Mutation{Kind: auth.MutAddUser, User: r.Name, PasswordHash: h}, err
		})
		return &kvpb.UserAddResponse{Result: res}, err
	})
}

func (s *Service) UserDelete(ctx context.Context, req *kvpb.UserDeleteRequest) (*kvpb.UserDeleteResponse, error) {
	return authCall(s, ctx, "UserDelete", opWrite, req, adminOnly[*kvpb.UserDeleteRequest](s), func(ctx context.Context, r *kvpb.UserDeleteRequest) (*kvpb.UserDeleteResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) { return auth.Mutation{Kind: auth.MutDeleteUser, User: r.Name}, nil })
		return &kvpb.UserDeleteResponse{Result: res}, err
	})
}

func (s *Service) UserChangePassword(ctx context.Context, req *kvpb.UserChangePasswordRequest) (*kvpb.UserChangePasswordResponse, error) {
	self := func(ctx context.Context, r *kvpb.UserChangePasswordRequest) error {
		return s.authorize(ctx, func(st *auth.State, user string) error {
			if user == r.Name {
				return nil
			}
			return st.AuthorizeAdmin(user, auth.VerbAuth)
		})
	}
	return authCall(s, ctx, "UserChangePassword", opWrite, req, self, func(ctx context.Context, r *kvpb.UserChangePasswordRequest) (*kvpb.UserChangePasswordResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			if r.Password == "" {
				return auth.Mutation{}, invalid("a new password is required")
			}
			h, err := s.hashed(r.Password)
			return auth.Mutation{Kind: auth.MutChangePassword, User: r.Name, PasswordHash: h}, err
		})
		return &kvpb.UserChangePasswordResponse{Result: res}, err
	})
}

func (s *Service) UserGrantRole(ctx context.Context, req *kvpb.UserGrantRoleRequest) (*kvpb.UserGrantRoleResponse, error) {
	return authCall(s, ctx, "UserGrantRole", opWrite, req, adminOnly[*kvpb.UserGrantRoleRequest](s), func(ctx context.Context, r *kvpb.UserGrantRoleRequest) (*kvpb.UserGrantRoleResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			return auth.Mutation{Kind: auth.MutGrantRole, User: r.User, Role: r.Role}, nil
		})
		return &kvpb.UserGrantRoleResponse{Result: res}, err
	})
}

func (s *Service) UserRevokeRole(ctx context.Context, req *kvpb.UserRevokeRoleRequest) (*kvpb.UserRevokeRoleResponse, error) {
	return authCall(s, ctx, "UserRevokeRole", opWrite, req, adminOnly[*kvpb.UserRevokeRoleRequest](s), func(ctx context.Context, r *kvpb.UserRevokeRoleRequest) (*kvpb.UserRevokeRoleResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			return auth.Mutation{Kind: auth.MutRevokeRole, User: r.User, Role: r.Role}, nil
		})
		return &kvpb.UserRevokeRoleResponse{Result: res}, err
	})
}

func (s *Service) RoleAdd(ctx context.Context, req *kvpb.RoleAddRequest) (*kvpb.RoleAddResponse, error) {
	return authCall(s, ctx, "RoleAdd", opWrite, req, adminOnly[*kvpb.RoleAddRequest](s), func(ctx context.Context, r *kvpb.RoleAddRequest) (*kvpb.RoleAddResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) { return auth.Mutation{Kind: auth.MutAddRole, Role: r.Name}, nil })
		return &kvpb.RoleAddResponse{Result: res}, err
	})
}

func (s *Service) RoleDelete(ctx context.Context, req *kvpb.RoleDeleteRequest) (*kvpb.RoleDeleteResponse, error) {
	return authCall(s, ctx, "RoleDelete", opWrite, req, adminOnly[*kvpb.RoleDeleteRequest](s), func(ctx context.Context, r *kvpb.RoleDeleteRequest) (*kvpb.RoleDeleteResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) { return auth.Mutation{Kind: auth.MutDeleteRole, Role: r.Name}, nil })
		return &kvpb.RoleDeleteResponse{Result: res}, err
	})
}

// toPermission converts the wire form; the access is required only when
// granting.
func toPermission(p *kvpb.Permission, needAccess bool) (auth.Permission, error) {
	if p == nil {
		return auth.Permission{}, invalid("a permission is required")
	}
	out := auth.Permission{Access: auth.Access(p.Access), Key: p.Key, End: p.RangeEnd, Match: auth.MatchKey}
	switch {
	case p.Prefix && len(p.RangeEnd) > 0:
		return out, invalid("a permission is a prefix or a range, not both")
	case p.Prefix:
		out.Match = auth.MatchPrefix
	case len(p.RangeEnd) > 0:
		out.Match = auth.MatchRange
	}
	if !needAccess {
		out.Access = auth.ReadWrite // ignored by revoke; keeps validation happy
	} else if p.Access == kvpb.Permission_ACCESS_UNSPECIFIED {
		return out, invalid("permission access must be read, write or readwrite")
	}
	return out, nil
}

func fromPermission(p auth.Permission) *kvpb.Permission {
	return &kvpb.Permission{Access: kvpb.Permission_Access(p.Access), Key: p.Key, RangeEnd: p.End, Prefix: p.Match == auth.MatchPrefix}
}

func (s *Service) RoleGrantPermission(ctx context.Context, req *kvpb.RoleGrantPermissionRequest) (*kvpb.RoleGrantPermissionResponse, error) {
	return authCall(s, ctx, "RoleGrantPermission", opWrite, req, adminOnly[*kvpb.RoleGrantPermissionRequest](s), func(ctx context.Context, r *kvpb.RoleGrantPermissionRequest) (*kvpb.RoleGrantPermissionResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			p, err := toPermission(r.Permission, true)
			return auth.Mutation{Kind: auth.MutGrantPermission, Role: r.Role, Permission: p}, err
		})
		return &kvpb.RoleGrantPermissionResponse{Result: res}, err
	})
}

func (s *Service) RoleRevokePermission(ctx context.Context, req *kvpb.RoleRevokePermissionRequest) (*kvpb.RoleRevokePermissionResponse, error) {
	return authCall(s, ctx, "RoleRevokePermission", opWrite, req, adminOnly[*kvpb.RoleRevokePermissionRequest](s), func(ctx context.Context, r *kvpb.RoleRevokePermissionRequest) (*kvpb.RoleRevokePermissionResponse, error) {
		res, err := s.mutate(ctx, func() (auth.Mutation, error) {
			p, err := toPermission(r.Permission, false)
			return auth.Mutation{Kind: auth.MutRevokePermission, Role: r.Role, Permission: p}, err
		})
		return &kvpb.RoleRevokePermissionResponse{Result: res}, err
	})
}

// heldState is the state for the read-only admin methods, once the caller
// may read it.
func (s *Service) heldState(ctx context.Context) (*auth.State, error) {
	if err := s.authorizeAdmin(ctx, auth.VerbAuth); err != nil {
		return nil, err
	}
	return s.auth.Check(time.Now())
}

func (s *Service) UserList(ctx context.Context, req *kvpb.UserListRequest) (*kvpb.UserListResponse, error) {
	return authCall(s, ctx, "UserList", opRead, req, nil, func(ctx context.Context, _ *kvpb.UserListRequest) (*kvpb.UserListResponse, error) {
		st, err := s.heldState(ctx)
		if err != nil {
			return nil, err
		}
		return &kvpb.UserListResponse{Users: st.UserNames()}, nil
	})
}

func (s *Service) UserGet(ctx context.Context, req *kvpb.UserGetRequest) (*kvpb.UserGetResponse, error) {
	return authCall(s, ctx, "UserGet", opRead, req, nil, func(ctx context.Context, r *kvpb.UserGetRequest) (*kvpb.UserGetResponse, error) {
		st, err := s.heldState(ctx)
		if err != nil {
			return nil, err
		}
		u, ok := st.User(r.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %q", auth.ErrUserNotFound, r.Name)
		}
		return &kvpb.UserGetResponse{Name: u.Name, Roles: u.Roles, HasPassword: len(u.PasswordHash) > 0}, nil
	})
}

func (s *Service) RoleList(ctx context.Context, req *kvpb.RoleListRequest) (*kvpb.RoleListResponse, error) {
	return authCall(s, ctx, "RoleList", opRead, req, nil, func(ctx context.Context, _ *kvpb.RoleListRequest) (*kvpb.RoleListResponse, error) {
		st, err := s.heldState(ctx)
		if err != nil {
			return nil, err
		}
		return &kvpb.RoleListResponse{Roles: st.RoleNames()}, nil
	})
}

func (s *Service) RoleGet(ctx context.Context, req *kvpb.RoleGetRequest) (*kvpb.RoleGetResponse, error) {
	return authCall(s, ctx, "RoleGet", opRead, req, nil, func(ctx context.Context, r *kvpb.RoleGetRequest) (*kvpb.RoleGetResponse, error) {
		st, err := s.heldState(ctx)
		if err != nil {
			return nil, err
		}
		role, ok := st.Role(r.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %q", auth.ErrRoleNotFound, r.Name)
		}
		resp := &kvpb.RoleGetResponse{Name: role.Name}
		for _, p := range role.Permissions {
			resp.Permissions = append(resp.Permissions, fromPermission(p))
		}
		return resp, nil
	})
}
