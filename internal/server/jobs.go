package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// newJobID makes an ID that sorts by submission time: 8 base-36 digits of
// milliseconds, then 6 random ones.
func newJobID() string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	ms := strconv.FormatInt(time.Now().UnixMilli(), 36)
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = digits[int(b[i])%36]
	}
	return "j" + ms + string(b)
}

func fieldErr(field, msg string) error {
	return &api.ValidationError{Fields: []api.FieldError{{Field: field, Message: msg}}}
}

func (s *Server) createJob(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	b, err := readBody(r)
	if err != nil {
		return err
	}
	j, err := api.DecodeJob(b)
	if err != nil {
		return err
	}
	if !isZeroStatus(&j.Status) {
		return fieldErr("status", "is set by the server")
	}
	tenant := p.tenant
	if p.admin() {
		tenant = j.Metadata.Tenant
		if tenant == "" {
			tenant = "default"
		}
	} else if j.Metadata.Tenant != "" && j.Metadata.Tenant != p.tenant {
		return &httpError{code: http.StatusForbidden, msg: "metadata.tenant: a tenant token submits to its own tenant only"}
	}
	lookup := func() (*api.Tenant, string, *api.Queue) {
		s.st.mu.RLock()
		defer s.st.mu.RUnlock()
		t := s.st.tenants[tenant]
		queue := j.Spec.Queue
		if queue == "" && t != nil {
			queue = t.Spec.DefaultQueue
		}
		if queue == "" {
			queue = "default"
		}
		return t, queue, s.st.queues[queue]
	}
	t, queue, q := lookup()
	if t == nil || q == nil {
		// Made a moment ago? Wait for this replica's own writes.
		if err := s.caughtUp(r.Context()); err != nil {
			return err
		}
		t, queue, q = lookup()
	}
	if t == nil {
		return fieldErr("metadata.tenant", "no tenant "+tenant)
	}
	if q == nil {
		return fieldErr("spec.queue", "no queue "+queue)
	}
	if len(q.Spec.Tenants) > 0 && !contains(q.Spec.Tenants, tenant) {
		return fieldErr("spec.queue", "tenant "+tenant+" may not submit to queue "+queue)
	}
	now := time.Now().UTC()
	j.Spec.Queue = queue
	if j.Metadata.ID == "" {
		j.Metadata.ID = newJobID()
	}
	j.Metadata.Tenant = tenant
	j.Metadata.CreatedAt = now
	j.Metadata.ResourceVersion = 0
	j.Status = api.JobStatus{Phase: api.PhasePending, SubmittedAt: now}
	key := store.JobsKey + j.Metadata.ID
	rev, err := s.createWith(r.Context(), key, mustJSON(j),
		[]clientv3.Cmp{
			// The tenant and the queue exist at the moment of the write.
			clientv3.Compare(clientv3.CreateRevision(store.TenantsKey+tenant), ">", 0),
			clientv3.Compare(clientv3.CreateRevision(store.QueuesKey+queue), ">", 0),
		},
		eventOp(api.Event{Time: now, Reason: "Submitted", Kind: api.KindJob, Name: j.Metadata.ID, Tenant: tenant,
			Message: fmt.Sprintf("%s: %d x %d GPUs on queue %s", j.Metadata.Name, j.Spec.Replicas, j.Spec.GPUsPerReplica, queue)}))
	if errors.Is(err, store.ErrExists) {
		return errConflict("job %s already exists", j.Metadata.ID)
	}
	if err != nil {
		return err
	}
	s.wrote(rev)
	j.Metadata.ResourceVersion = rev
	s.metrics.submitted.Inc()
	return writeJSON(w, http.StatusCreated, j)
}

// createWith creates key if absent and the extra compares hold; it tells a
// lost race (exists) from a vanished tenant or queue (conflict).
func (s *Server) createWith(ctx context.Context, key string, val []byte, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	all := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, cmps...)
	rev, err := s.store.Txn(ctx, all, append([]clientv3.Op{opPut(key, val)}, ops...))
	if !errors.Is(err, store.ErrConflict) {
		return rev, err
	}
	// Which compare failed? A retry of our own create finds our value.
	kv, gerr := s.store.Get(ctx, key)
	if gerr == nil {
		if string(kv.Value) == string(val) {
			return kv.ModRev, nil
		}
		return 0, fmt.Errorf("%s: %w", key, store.ErrExists)
	}
	return 0, errConflict("the tenant or queue was deleted meanwhile")
}

func isZeroStatus(s *api.JobStatus) bool {
	return s.Phase == "" && s.Placement == nil && s.Generation == 0 && s.Restarts == 0 && s.Requeues == 0 &&
		s.Reason == "" && s.SubmittedAt.IsZero() && s.StartedAt.IsZero() && s.FinishedAt.IsZero() && s.RestartAt.IsZero()
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	p := principalOf(r)
	q := r.URL.Query()
	tenant := q.Get("tenant")
	if !p.admin() {
		if tenant != "" && tenant != p.tenant {
			return errForbidden("a tenant token lists its own tenant's jobs only")
		}
		tenant = p.tenant
	}
	phase, queue, after, name := api.Phase(q.Get("phase")), q.Get("queue"), q.Get("after"), q.Get("name")
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return errBad("limit: must be a positive integer")
		}
		limit = n
	}
	s.st.mu.RLock()
	out := api.List[api.Job]{Items: []api.Job{}, ResourceVersion: s.st.rev}
	ids := make([]string, 0, len(s.st.jobs))
	for id, rec := range s.st.jobs {
		j := rec.job
		if (tenant != "" && j.Metadata.Tenant != tenant) || (phase != "" && j.Status.Phase != phase) ||
			(queue != "" && j.Spec.Queue != queue) || (name != "" && j.Metadata.Name != name) || (after != "" && id <= after) {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	for _, id := range ids {
		out.Items = append(out.Items, *s.st.jobs[id].job)
	}
	s.st.mu.RUnlock()
	return writeJSON(w, 200, out)
}

// visibleJob returns the job if the caller may see it. Other tenants' jobs
// are "not found", so IDs leak nothing.
func (s *Server) visibleJob(r *http.Request, id string) (*api.Job, int64, error) {
	if err := s.caughtUp(r.Context()); err != nil {
		return nil, 0, err
	}
	s.st.mu.RLock()
	rec := s.st.jobs[id]
	s.st.mu.RUnlock()
	if rec == nil {
		// Submitted through another replica a moment ago?
		if err := s.fresh(r.Context()); err != nil {
			return nil, 0, err
		}
		s.st.mu.RLock()
		rec = s.st.jobs[id]
		s.st.mu.RUnlock()
	}
	if rec == nil || !principalOf(r).canSeeTenant(rec.job.Metadata.Tenant) {
		return nil, 0, errNotFound("job " + id)
	}
	return rec.job, rec.modRev, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	j, _, err := s.visibleJob(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, j)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	p := principalOf(r)
	if _, _, err := s.visibleJob(r, id); err != nil {
		return err
	}
	for attempt := 0; attempt < 10; attempt++ {
		// Read from etcd, not the state: the leader may have just
		// changed the job.
		kv, err := s.store.Get(r.Context(), store.JobsKey+id)
		if err != nil {
			return err
		}
		var j api.Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			return err
		}
		if j.Status.Phase.Terminal() {
			return errConflict("job %s is already %s", id, j.Status.Phase)
		}
		now := time.Now().UTC()
		j.Status.Phase = api.PhaseCancelled
		j.Status.Reason = "cancelled by token " + p.token
		j.Status.FinishedAt = now
		j.Metadata.ResourceVersion = 0
		rev, err := s.store.CAS(r.Context(), store.JobsKey+id, mustJSON(&j), kv.ModRev,
			eventOp(api.Event{Time: now, Reason: "Cancelled", Kind: api.KindJob, Name: id, Tenant: j.Metadata.Tenant, Message: j.Status.Reason}))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.wrote(rev)
		j.Metadata.ResourceVersion = rev
		return writeJSON(w, 200, &j)
	}
	return errConflict("job %s kept changing; retry", id)
}

func (s *Server) deleteJob(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	j, modRev, err := s.visibleJob(r, id)
	if err != nil {
		return err
	}
	if !j.Status.Phase.Terminal() {
		return errConflict("job %s is %s: cancel it first", id, j.Status.Phase)
	}
	rev, err := s.store.Txn(r.Context(),
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.JobsKey+id), "=", modRev)},
		[]clientv3.Op{clientv3.OpDelete(store.JobsKey + id), clientv3.OpDelete(store.ReportsKey+id+"/", clientv3.WithPrefix()),
			clientv3.OpDelete(store.LogsKey+id+"/", clientv3.WithPrefix())})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "job " + id + " deleted"})
}

func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, _, err := s.visibleJob(r, id); err != nil {
		return err
	}
	evs, rev, err := s.events(r.Context(), func(e *api.Event) bool { return e.Kind == api.KindJob && e.Name == id })
	if err != nil {
		return err
	}
	return writeJSON(w, 200, api.List[api.Event]{Items: evs, ResourceVersion: rev})
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	kind, name := r.URL.Query().Get("kind"), r.URL.Query().Get("name")
	evs, rev, err := s.events(r.Context(), func(e *api.Event) bool {
		if !p.admin() && e.Tenant != p.tenant {
			return false
		}
		return (kind == "" || strings.EqualFold(kind, e.Kind)) && (name == "" || name == e.Name)
	})
	if err != nil {
		return err
	}
	return writeJSON(w, 200, api.List[api.Event]{Items: evs, ResourceVersion: rev})
}

// events reads the last hour of events (the leader expires older ones).
func (s *Server) events(ctx context.Context, keep func(*api.Event) bool) ([]api.Event, int64, error) {
	kvs, rev, err := s.store.List(ctx, store.EventsKey)
	if err != nil {
		return nil, 0, err
	}
	out := []api.Event{}
	for _, kv := range kvs {
		var e api.Event
		if json.Unmarshal(kv.Value, &e) == nil && keep(&e) {
			out = append(out, e)
		}
	}
	if len(out) > 1000 {
		out = out[len(out)-1000:]
	}
	return out, rev, nil
}
