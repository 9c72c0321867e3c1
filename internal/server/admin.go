package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

func defaultTenant() *api.Tenant {
	return &api.Tenant{APIVersion: api.Version, Kind: api.KindTenant,
		Metadata: api.ObjectMeta{Name: "default", CreatedAt: time.Now().UTC()},
		Spec:     api.TenantSpec{Description: "made at first start", DefaultQueue: "default"}}
}

func defaultQueue() *api.Queue {
	return &api.Queue{APIVersion: api.Version, Kind: api.KindQueue,
		Metadata: api.ObjectMeta{Name: "default", CreatedAt: time.Now().UTC()},
		Spec:     api.QueueSpec{Weight: 1, QuotaRemainder: true}}
}

// eventOp writes an event in the same transaction as the change it tells
// of. Keys sort by time, so expiry is one range delete.
func eventOp(ev api.Event) clientv3.Op {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Type == "" {
		ev.Type = "Normal"
	}
	b := make([]byte, 4)
	rand.Read(b)
	key := fmt.Sprintf("%s%020d-%s", store.EventsKey, ev.Time.UnixNano(), hex.EncodeToString(b))
	return opPut(key, mustJSON(ev))
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	p := principalOf(r)
	s.st.mu.RLock()
	out := api.List[api.Tenant]{Items: []api.Tenant{}, ResourceVersion: s.st.rev}
	for name, t := range s.st.tenants {
		if p.canSeeTenant(name) {
			out.Items = append(out.Items, *t)
		}
	}
	s.st.mu.RUnlock()
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return writeJSON(w, 200, out)
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	name := r.PathValue("name")
	if !principalOf(r).canSeeTenant(name) {
		return errNotFound("tenant " + name)
	}
	s.st.mu.RLock()
	t := s.st.tenants[name]
	s.st.mu.RUnlock()
	if t == nil {
		return errNotFound("tenant " + name)
	}
	return writeJSON(w, 200, t)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) error {
	var t api.Tenant
	if err := decodeBody(r, &t); err != nil {
		return err
	}
	if err := api.ValidateTenant(&t); err != nil {
		return err
	}
	t.Metadata = api.ObjectMeta{Name: t.Metadata.Name, Labels: t.Metadata.Labels, CreatedAt: time.Now().UTC()}
	rev, err := s.store.Create(r.Context(), store.TenantsKey+t.Metadata.Name, mustJSON(&t),
		eventOp(api.Event{Reason: "Created", Kind: api.KindTenant, Name: t.Metadata.Name, Tenant: t.Metadata.Name}))
	if err != nil {
		return err
	}
	s.wrote(rev)
	t.Metadata.ResourceVersion = rev
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	t := s.st.tenants[name]
	live := 0
	for _, j := range s.st.jobs {
		if j.job.Metadata.Tenant == name && !j.job.Status.Phase.Terminal() {
			live++
		}
	}
	cmps := []clientv3.Cmp{}
	ops := []clientv3.Op{clientv3.OpDelete(store.TenantsKey + name)}
	for hash, tok := range s.st.tokens {
		if tok.Tenant == name {
			ops = append(ops, clientv3.OpDelete(store.TokensKey+hash))
		}
	}
	s.st.mu.RUnlock()
	if t == nil {
		return errNotFound("tenant " + name)
	}
	if live > 0 {
		return errConflict("tenant %s has %d pending or running jobs; cancel them first", name, live)
	}
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(store.TenantsKey+name), "=", t.Metadata.ResourceVersion))
	ops = append(ops, eventOp(api.Event{Reason: "Deleted", Kind: api.KindTenant, Name: name, Tenant: name}))
	rev, err := s.store.Txn(r.Context(), cmps, ops)
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "tenant " + name + " deleted"})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	out := api.List[api.TokenInfo]{Items: []api.TokenInfo{}, ResourceVersion: s.st.rev}
	for _, t := range s.st.tokens {
		out.Items = append(out.Items, t.TokenInfo)
	}
	s.st.mu.RUnlock()
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].CreatedAt.Before(out.Items[j].CreatedAt) })
	return writeJSON(w, 200, out)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req api.TokenRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := api.ValidateToken(&req); err != nil {
		return err
	}
	tok, info := newToken(req.Name, req.Role, req.Tenant)
	info.Node = req.Node
	var cmps []clientv3.Cmp
	if req.Role == api.RoleTenant {
		// The tenant must exist when the token is made, in the same
		// transaction.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(store.TenantsKey+req.Tenant), ">", 0))
	}
	rev, err := s.store.Txn(r.Context(), cmps, []clientv3.Op{opPut(store.TokensKey+hashToken(tok), mustJSON(info))})
	if err == store.ErrConflict {
		return &httpError{code: http.StatusBadRequest, msg: "tenant: no tenant " + req.Tenant,
			fields: []api.FieldError{{Field: "tenant", Message: "no tenant " + req.Tenant}}}
	}
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, http.StatusCreated, api.TokenResponse{Token: tok, ID: info.ID, Role: info.Role, Tenant: info.Tenant, Node: info.Node})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	s.st.mu.RLock()
	var hash string
	for h, t := range s.st.tokens {
		if t.ID == id {
			hash = h
		}
	}
	s.st.mu.RUnlock()
	if hash == "" {
		return errNotFound("token " + id)
	}
	rev, err := s.store.Txn(r.Context(), nil, []clientv3.Op{clientv3.OpDelete(store.TokensKey + hash)})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "token " + id + " revoked"})
}

func (s *Server) listQueues(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	out := api.List[api.Queue]{Items: []api.Queue{}, ResourceVersion: s.st.rev}
	for _, q := range s.st.queues {
		out.Items = append(out.Items, *q)
	}
	s.st.mu.RUnlock()
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return writeJSON(w, 200, out)
}

func (s *Server) getQueue(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	q := s.st.queues[r.PathValue("name")]
	s.st.mu.RUnlock()
	if q == nil {
		return errNotFound("queue " + r.PathValue("name"))
	}
	return writeJSON(w, 200, q)
}

func (s *Server) putQueue(w http.ResponseWriter, r *http.Request) error {
	var q api.Queue
	if err := decodeBody(r, &q); err != nil {
		return err
	}
	name := r.PathValue("name")
	if q.Metadata.Name == "" {
		q.Metadata.Name = name
	}
	if q.Metadata.Name != name {
		return &httpError{code: 400, msg: "metadata.name: must match the path (" + name + ")",
			fields: []api.FieldError{{Field: "metadata.name", Message: "must match the path"}}}
	}
	if err := api.ValidateQueue(&q); err != nil {
		return err
	}
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	old := s.st.queues[name]
	var parentOK bool
	if q.Spec.Parent != "" {
		_, parentOK = s.st.queues[q.Spec.Parent]
		// Refuse cycles: walk up from the parent.
		for p, steps := q.Spec.Parent, 0; p != "" && steps < 64; steps++ {
			if p == name {
				parentOK = false
				break
			}
			if pq := s.st.queues[p]; pq != nil {
				p = pq.Spec.Parent
			} else {
				p = ""
			}
		}
	}
	s.st.mu.RUnlock()
	if q.Spec.Parent != "" && !parentOK {
		return &httpError{code: 400, msg: "spec.parent: no such queue, or a cycle",
			fields: []api.FieldError{{Field: "spec.parent", Message: "no such queue, or a cycle"}}}
	}
	q.Metadata = api.ObjectMeta{Name: name, Labels: q.Metadata.Labels, CreatedAt: time.Now().UTC()}
	var modRev int64
	code := http.StatusCreated
	if old != nil {
		q.Metadata.CreatedAt = old.Metadata.CreatedAt
		modRev = old.Metadata.ResourceVersion
		code = http.StatusOK
	}
	rev, err := s.store.CAS(r.Context(), store.QueuesKey+name, mustJSON(&q), modRev,
		eventOp(api.Event{Reason: "Configured", Kind: api.KindQueue, Name: name}))
	if err != nil {
		return err
	}
	s.wrote(rev)
	q.Metadata.ResourceVersion = rev
	return writeJSON(w, code, q)
}

func (s *Server) deleteQueue(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	q := s.st.queues[name]
	live, children := 0, 0
	for _, j := range s.st.jobs {
		if j.job.Spec.Queue == name && !j.job.Status.Phase.Terminal() {
			live++
		}
	}
	for _, c := range s.st.queues {
		if c.Spec.Parent == name {
			children++
		}
	}
	s.st.mu.RUnlock()
	if q == nil {
		return errNotFound("queue " + name)
	}
	if live > 0 || children > 0 {
		return errConflict("queue %s has %d live jobs and %d child queues", name, live, children)
	}
	rev, err := s.store.Txn(r.Context(),
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.QueuesKey+name), "=", q.Metadata.ResourceVersion)},
		[]clientv3.Op{clientv3.OpDelete(store.QueuesKey + name)})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "queue " + name + " deleted"})
}
