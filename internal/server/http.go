package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// httpError is an error with a status code.
type httpError struct {
	code   int
	msg    string
	fields []api.FieldError
}

func (e *httpError) Error() string { return e.msg }

func errBad(format string, args ...any) error {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}
func errNotFound(what string) error {
	return &httpError{code: http.StatusNotFound, msg: what + " not found"}
}
func errForbidden(msg string) error    { return &httpError{code: http.StatusForbidden, msg: msg} }
func errUnauthorized(msg string) error { return &httpError{code: http.StatusUnauthorized, msg: msg} }
func errConflict(format string, args ...any) error {
	return &httpError{code: http.StatusConflict, msg: fmt.Sprintf(format, args...)}
}

// route is one endpoint; the table drives the mux, auth, metrics and the
// OpenAPI document.
type route struct {
	method, path string
	access       access
	summary      string
	req, resp    any // example values of the body types, for OpenAPI
	handler      func(w http.ResponseWriter, r *http.Request) error
	stream       bool // server-sent events or a streamed body
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		rt := rt
		mux.Handle(rt.method+" "+rt.path, s.wrap(rt))
	}
	mux.Handle("GET /metrics", s.metrics.handler())
	// Deployment traffic: every method, authenticated, no body limit.
	mux.Handle("/v1/deployments/{name}/", s.deploy.traffic())
	if s.cfg.Pprof {
		mux.Handle("/debug/pprof/", s.adminOnly(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", s.adminOnly(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/trace", s.adminOnly(http.HandlerFunc(pprof.Trace)))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The dashboard has every path the API does not: /v1/... stays
		// the API's, with JSON errors.
		if s.cfg.Dashboard != nil && !strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1" {
			s.cfg.Dashboard.ServeHTTP(w, r)
			return
		}
		writeError(w, &httpError{code: http.StatusNotFound, msg: "no such route: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err == nil && !p.admin() {
			err = errForbidden("admin only")
		}
		if err != nil {
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// wrap authenticates, authorises, limits the body, times the request and
// turns errors into JSON answers.
func (s *Server) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		err := func() error {
			if rt.access != accessPublic {
				p, err := s.authenticate(r)
				if err != nil {
					return err
				}
				if !allowed(p, rt.access) {
					return errForbidden(fmt.Sprintf("a %s token may not %s", p.role, label))
				}
				// The agent routes name their node in the path (registration,
				// in the body, checks it itself).
				if rt.access == accessAgent {
					if err := p.forNode(r.PathValue("name")); err != nil {
						return err
					}
				}
				r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, p))
			}
			if r.Body != nil {
				r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes)
			}
			return rt.handler(sw, r)
		}()
		if err != nil {
			writeError(sw, err)
		}
		if !rt.stream {
			s.metrics.apiLatency.WithLabelValues(label, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	var ve *api.ValidationError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &mb):
		he = &httpError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body larger than %d bytes", mb.Limit)}
	case errors.As(err, &ve):
		he = &httpError{code: http.StatusBadRequest, msg: ve.Error(), fields: ve.Fields}
	case errors.As(err, &he):
	case errors.Is(err, store.ErrNotFound):
		he = &httpError{code: http.StatusNotFound, msg: err.Error()}
	case errors.Is(err, store.ErrConflict):
		he = &httpError{code: http.StatusConflict, msg: err.Error() + "; read again and retry"}
	case errors.Is(err, store.ErrExists):
		he = &httpError{code: http.StatusConflict, msg: err.Error()}
	case errors.Is(err, context.Canceled):
		return
	default:
		he = &httpError{code: http.StatusServiceUnavailable, msg: "store unavailable: " + err.Error()}
	}
	writeJSON(w, he.code, api.ErrorResponse{Error: he.msg, Fields: he.fields})
}

// readBody reads a (size-limited) body.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, err
		}
		return nil, errBad("reading body: %v", err)
	}
	return b, nil
}

// decodeBody reads a strict JSON or YAML body into v.
func decodeBody(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	return api.Decode(b, v)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func opPut(key string, val []byte, opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpPut(key, string(val), opts...)
}

// wrote records a write so later lists by this replica include it.
func (s *Server) wrote(rev int64) {
	for {
		cur := s.lastWrite.Load()
		if rev <= cur || s.lastWrite.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// caughtUp waits until the state includes this replica's writes.
func (s *Server) caughtUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.syncTo(ctx, s.lastWrite.Load()); err != nil {
		return &httpError{code: http.StatusServiceUnavailable, msg: "state is catching up with etcd; retry"}
	}
	return nil
}

type contextT = context.Context

// storeRetry runs a raw etcd call with the store's timeouts and retries.
func (s *Server) storeRetry(r *http.Request, op func(cli *clientv3.Client, ctx context.Context) error) error {
	return s.store.Do(r.Context(), func(ctx context.Context) error { return op(s.store.Client(), ctx) })
}

// syncTo waits until the state reflects revision rev. Revisions also move
// with writes the state's watch does not carry (events, logs, the
// election), so when the state lags it asks etcd for a progress
// notification, which brings the watch up to the current revision.
func (s *Server) syncTo(ctx context.Context, rev int64) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := s.st.waitRev(wctx, rev)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		s.store.RequestProgress(ctx)
	}
}

// fresh waits until the state includes everything etcd holds now, for a
// request that names something this replica may not have seen yet (made
// through another replica a moment ago).
func (s *Server) fresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return err
	}
	return s.syncTo(ctx, rev)
}
