package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// Tokens are 160 random bits; the server stores their SHA-256 only. A
// slow hash (bcrypt) buys nothing for secrets with this much entropy and
// would cost a millisecond per request.

const tokenPrefix = "gct_"

func newToken(name string, role api.Role, tenant string) (string, api.TokenInfo) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	tok := tokenPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return tok, api.TokenInfo{ID: hashToken(tok)[:12], Name: name, Role: role, Tenant: tenant, CreatedAt: time.Now().UTC()}
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// principal is who sent a request.
type principal struct {
	role   api.Role
	tenant string
	node   string // an agent token bound to this node
	token  string // token ID
}

// forNode says whether p may act as the agent of node n.
func (p *principal) forNode(n string) error {
	if p.role == api.RoleAgent && p.node != "" && n != "" && n != p.node {
		return errForbidden(fmt.Sprintf("this agent token is bound to node %s, not %s", p.node, n))
	}
	return nil
}

func (p *principal) admin() bool { return p.role == api.RoleAdmin }

// canSeeTenant reports whether p may read or act on objects of tenant t.
func (p *principal) canSeeTenant(t string) bool {
	return p.admin() || (p.role == api.RoleTenant && p.tenant == t)
}

type ctxKey struct{}

func principalOf(r *http.Request) *principal {
	p, _ := r.Context().Value(ctxKey{}).(*principal)
	return p
}

// authenticate finds the token of a request: first in the state, then (a
// token made a moment ago on another replica) in etcd.
func (s *Server) authenticate(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return nil, errUnauthorized("missing bearer token (Authorization: Bearer <token>)")
	}
	hash := hashToken(strings.TrimSpace(tok))
	s.st.mu.RLock()
	rec := s.st.tokens[hash]
	var tenantOK bool
	if rec != nil && rec.Role == api.RoleTenant {
		_, tenantOK = s.st.tenants[rec.Tenant]
	}
	s.st.mu.RUnlock()
	if rec == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		kv, err := s.store.Get(ctx, store.TokensKey+hash)
		if err != nil {
			return nil, errUnauthorized("invalid token")
		}
		var info api.TokenInfo
		if json.Unmarshal(kv.Value, &info) != nil {
			return nil, errUnauthorized("invalid token")
		}
		rec = &tokenRec{info}
		tenantOK = true
	}
	if rec.Role == api.RoleTenant && !tenantOK {
		return nil, errUnauthorized("the token's tenant no longer exists")
	}
	return &principal{role: rec.Role, tenant: rec.Tenant, node: rec.Node, token: rec.ID}, nil
}

// Access levels of routes.
type access int

const (
	accessAny    access = iota // any valid token
	accessUser                 // admin or tenant
	accessAdmin                // admin only
	accessAgent                // agent or admin
	accessPublic               // no token (health, OpenAPI)
)

func allowed(p *principal, a access) bool {
	switch a {
	case accessAny, accessPublic:
		return true
	case accessUser:
		return p.role == api.RoleAdmin || p.role == api.RoleTenant
	case accessAdmin:
		return p.role == api.RoleAdmin
	case accessAgent:
		return p.role == api.RoleAdmin || p.role == api.RoleAgent
	}
	return false
}
