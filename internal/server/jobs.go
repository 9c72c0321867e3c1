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
	// Made a moment ago? Wait for this replica's own writes.
	tenant, queue, err := s.tenantQueue(r.Context(), p, j.Metadata.Tenant, j.Spec.Queue, "submits", s.caughtUp)
	if err != nil {
		return err
	}
	j.Spec.Queue = queue
	if j.Metadata.ID == "" {
		j.Metadata.ID = newJobID()
	}
	j.Metadata.Tenant = tenant
	rev, err := s.storeJob(r.Context(), j,
		fmt.Sprintf("%s: %d x %d GPUs on queue %s", j.Metadata.Name, j.Spec.Replicas, j.Spec.GPUsPerReplica, queue))
	if errors.Is(err, store.ErrExists) {
		return errConflict("job %s already exists", j.Metadata.ID)
	}
	if err != nil {
		return err
	}
	j.Metadata.ResourceVersion = rev
	return writeJSON(w, http.StatusCreated, j)
}

// tenantQueue picks the tenant and queue of an object p submits: an
// admin's names its tenant ("default" when it does not), a tenant token's
// is its own (naming another is forbidden: a token "verb" to its own
// tenant only); the queue is the object's, else the tenant's default
// queue, else "default". Both must exist and the queue admit the tenant.
// When the tenant or queue is not in the state, wait runs once (the
// caller's way of catching up) and they are looked up again.
func (s *Server) tenantQueue(ctx context.Context, p *principal, tenant, queue, verb string, wait func(context.Context) error) (string, string, error) {
	if p.admin() {
		if tenant == "" {
			tenant = "default"
		}
	} else if tenant != "" && tenant != p.tenant {
		return "", "", &httpError{code: http.StatusForbidden, msg: "metadata.tenant: a tenant token " + verb + " to its own tenant only"}
	} else {
		tenant = p.tenant
	}
	asked := queue
	lookup := func() (*api.Tenant, string, *api.Queue) {
		s.st.mu.RLock()
		defer s.st.mu.RUnlock()
		t := s.st.tenants[tenant]
		queue := asked
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
		if err := wait(ctx); err != nil {
			return "", "", err
		}
		t, queue, q = lookup()
	}
	if field, msg := admission(t, q, tenant, queue); field != "" {
		return "", "", fieldErr(field, msg)
	}
	return tenant, queue, nil
}

// admission says why tenant may not submit to queue (t and q are those
// looked up, nil when absent): the field to blame and the message, or ""
// when it may.
func admission(t *api.Tenant, q *api.Queue, tenant, queue string) (field, msg string) {
	switch {
	case t == nil:
		return "metadata.tenant", "no tenant " + tenant
	case q == nil:
		return "spec.queue", "no queue " + queue
	case len(q.Spec.Tenants) > 0 && !contains(q.Spec.Tenants, tenant):
		return "spec.queue", "tenant " + tenant + " may not submit to queue " + queue
	}
	return "", ""
}

// storeJob records a new job, admitted to its tenant and queue, as
// Pending, with a Submitted event saying message; the write holds only
// while the tenant and queue exist. It returns the job's revision
// (store.ErrExists: its ID is taken).
func (s *Server) storeJob(ctx context.Context, j *api.Job, message string) (int64, error) {
	tenant, queue := j.Metadata.Tenant, j.Spec.Queue
	now := time.Now().UTC()
	j.Metadata.CreatedAt, j.Metadata.ResourceVersion = now, 0
	j.Status = api.JobStatus{Phase: api.PhasePending, SubmittedAt: now}
	rev, err := s.createWith(ctx, store.JobsKey+j.Metadata.ID, mustJSON(j),
		[]clientv3.Cmp{
			// The tenant and the queue exist at the moment of the write.
			clientv3.Compare(clientv3.CreateRevision(store.TenantsKey+tenant), ">", 0),
			clientv3.Compare(clientv3.CreateRevision(store.QueuesKey+queue), ">", 0),
		},
		eventOp(api.Event{Time: now, Reason: "Submitted", Kind: api.KindJob, Name: j.Metadata.ID, Tenant: tenant, Message: message}))
	if err != nil {
		return 0, err
	}
	s.wrote(rev)
	s.metrics.submitted.Inc()
	return rev, nil
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
	j, cancelled, err := s.cancelStoredJob(r.Context(), id, "cancelled by token "+p.token)
	switch {
	case errors.Is(err, errKeptChanging):
		return errConflict("job %s kept changing; retry", id)
	case err != nil:
		return err
	case !cancelled:
		return errConflict("job %s is already %s", id, j.Status.Phase)
	}
	return writeJSON(w, 200, j)
}

// errKeptChanging: a job changed under every one of cancelStoredJob's tries.
var errKeptChanging = errors.New("kept changing")

// cancelStoredJob cancels job id with reason, in etcd, with a Cancelled
// event; a write that lost a race is tried again, 10 times in all
// (errKeptChanging after). It returns the job as stored then, and whether
// this call cancelled it (false: it had ended already, and is as it was).
// A job not in etcd is Get's store.ErrNotFound.
func (s *Server) cancelStoredJob(ctx context.Context, id, reason string) (*api.Job, bool, error) {
	for attempt := 0; attempt < 10; attempt++ {
		// Read from etcd, not the state: the leader may have just
		// changed the job.
		kv, err := s.store.Get(ctx, store.JobsKey+id)
		if err != nil {
			return nil, false, err
		}
		var j api.Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			return nil, false, err
		}
		if j.Status.Phase.Terminal() {
			return &j, false, nil
		}
		now := time.Now().UTC()
		j.Status.Phase = api.PhaseCancelled
		j.Status.Reason = reason
		j.Status.FinishedAt = now
		j.Metadata.ResourceVersion = 0
		rev, err := s.store.CAS(ctx, store.JobsKey+id, mustJSON(&j), kv.ModRev,
			eventOp(api.Event{Time: now, Reason: "Cancelled", Kind: api.KindJob, Name: id, Tenant: j.Metadata.Tenant, Message: reason}))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		s.wrote(rev)
		j.Metadata.ResourceVersion = rev
		return &j, true, nil
	}
	return nil, false, errKeptChanging
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
	if err := s.deleteStoredJob(r.Context(), id, modRev); err != nil {
		return err
	}
	return writeJSON(w, 200, api.Status{Message: "job " + id + " deleted"})
}

// deleteStoredJob deletes job id with its reports and logs, if it is
// still at revision modRev.
func (s *Server) deleteStoredJob(ctx context.Context, id string, modRev int64) error {
	rev, err := s.store.Txn(ctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.JobsKey+id), "=", modRev)},
		[]clientv3.Op{clientv3.OpDelete(store.JobsKey + id), clientv3.OpDelete(store.ReportsKey+id+"/", clientv3.WithPrefix()),
			clientv3.OpDelete(store.LogsKey+id+"/", clientv3.WithPrefix())})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return nil
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
