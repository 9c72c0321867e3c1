package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// Server-sent events: "event: NAME\ndata: JSON\n\n"; a comment line every
// 15 s keeps proxies from closing idle streams.

const sseKeepAlive = 15 * time.Second

func sseStart(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flush(w)
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func sseSend(w http.ResponseWriter, event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	flush(w)
	return nil
}

func (s *Server) assignments(w http.ResponseWriter, r *http.Request) error {
	node := r.PathValue("name")
	sub := &subscriber{kind: "assign", node: node, signal: make(chan struct{}, 1)}
	join := func() bool {
		s.st.mu.Lock()
		defer s.st.mu.Unlock()
		_, known := s.st.nodes[node]
		if known {
			s.st.subs[sub] = true
		}
		return known
	}
	if !join() {
		// The agent opens its stream right after registering, and the
		// registration may be acknowledged (by this replica or another)
		// before this replica's state has the node: catch up with etcd
		// before calling the node unknown.
		if err := s.fresh(r.Context()); err != nil {
			return err
		}
		if !join() {
			return errNotFound("node " + node + " (register first)")
		}
	}
	defer s.st.unsubscribe(sub)
	sseStart(w)
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	backoff := time.NewTimer(time.Hour)
	defer backoff.Stop()
	var last []byte
	for {
		s.st.mu.RLock()
		set, wake := s.st.assignments(node, time.Now())
		s.st.mu.RUnlock()
		// A restart backoff ending changes the set with no event.
		if !wake.IsZero() {
			backoff.Reset(time.Until(wake) + 10*time.Millisecond)
		} else {
			backoff.Stop()
		}
		// Send only when the set changed (ignoring the revision).
		b, _ := json.Marshal(set.Assignments)
		if !bytes.Equal(b, last) {
			if err := sseSend(w, "assignments", set); err != nil {
				return nil
			}
			last = b
		}
		select {
		case _, ok := <-sub.signal:
			if !ok {
				return nil // state reset: the agent reconnects
			}
		case <-backoff.C:
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flush(w)
		case <-r.Context().Done():
			return nil
		}
	}
}

func (s *Server) watchJobs(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	tenant := r.URL.Query().Get("tenant")
	if !p.admin() {
		tenant = p.tenant
	}
	sub := &subscriber{kind: "jobs", tenant: tenant, events: make(chan any, 4096)}
	s.st.mu.Lock()
	snap := make([]*api.Job, 0)
	for _, rec := range s.st.jobs {
		if tenant == "" || rec.job.Metadata.Tenant == tenant {
			snap = append(snap, rec.job)
		}
	}
	s.st.subs[sub] = true
	s.st.mu.Unlock()
	defer s.st.unsubscribe(sub)
	sseStart(w)
	for _, j := range snap {
		if err := sseSend(w, "job", api.WatchEvent[*api.Job]{Type: "ADDED", Object: j}); err != nil {
			return nil
		}
	}
	return s.pump(w, r, sub, "job")
}

func (s *Server) watchNodes(w http.ResponseWriter, r *http.Request) error {
	sub := &subscriber{kind: "nodes", events: make(chan any, 4096)}
	s.st.mu.Lock()
	snap := make([]*api.Node, 0, len(s.st.nodes))
	alloc := s.st.allocated()
	for name := range s.st.nodes {
		snap = append(snap, s.st.nodeView(name, alloc))
	}
	s.st.subs[sub] = true
	s.st.nodeWatchers++
	s.st.mu.Unlock()
	defer s.st.unsubscribe(sub)
	sseStart(w)
	for _, n := range snap {
		if err := sseSend(w, "node", api.WatchEvent[*api.Node]{Type: "ADDED", Object: n}); err != nil {
			return nil
		}
	}
	return s.pump(w, r, sub, "node")
}

func (s *Server) pump(w http.ResponseWriter, r *http.Request, sub *subscriber, event string) error {
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-sub.events:
			if !ok {
				return nil
			}
			if err := sseSend(w, event, ev); err != nil {
				return nil
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flush(w)
		case <-r.Context().Done():
			return nil
		}
	}
}

// jobLogs writes the stored output of a job's ranks: one rank raw, or all
// ranks with "[rank N] " before each line. With follow=true it streams new
// chunks until the job ends or the client leaves.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, _, err := s.visibleJob(r, id); err != nil {
		return err
	}
	prefix := store.LogsKey + id + "/"
	rank := r.URL.Query().Get("rank")
	if rank != "" {
		n, err := strconv.Atoi(rank)
		if err != nil || n < 0 {
			return errBad("rank: must be a non-negative integer")
		}
		prefix += fmt.Sprintf("%06d/", n)
	}
	kvs, rev, err := s.store.List(r.Context(), prefix)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(200)
	lw := &logWriter{w: w, tagged: rank == ""}
	for _, kv := range kvs {
		lw.write(kv.Key, kv.Value)
	}
	flush(w)
	if r.URL.Query().Get("follow") != "true" {
		return nil
	}
	wch := s.store.Client().Watch(clientv3.WithRequireLeader(r.Context()), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				return nil
			}
			for _, e := range resp.Events {
				if e.Type == clientv3.EventTypePut {
					lw.write(string(e.Kv.Key), e.Kv.Value)
				}
			}
			flush(w)
		case <-tick.C:
			s.st.mu.RLock()
			rec := s.st.jobs[id]
			done := rec == nil || rec.job.Status.Phase.Terminal()
			s.st.mu.RUnlock()
			if done {
				return nil
			}
		case <-r.Context().Done():
			return nil
		}
	}
}

type logWriter struct {
	w      http.ResponseWriter
	tagged bool
}

// write prints a chunk stored under .../<rank>/<gen>-<offset>.
func (lw *logWriter) write(key string, data []byte) {
	if !lw.tagged {
		lw.w.Write(data)
		return
	}
	parts := strings.Split(key, "/")
	rank := "?"
	if len(parts) >= 2 {
		if n, err := strconv.Atoi(parts[len(parts)-2]); err == nil {
			rank = strconv.Itoa(n)
		}
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if len(line) > 0 {
			fmt.Fprintf(lw.w, "[rank %s] %s", rank, line)
		}
	}
}
