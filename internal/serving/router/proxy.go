package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serve proxies one request to a replica of the pool.
func (p *pool) serve(w http.ResponseWriter, r *http.Request, path, raw string) {
	start := time.Now()
	o := p.opts.Load()
	ctx := r.Context()
	if isUpgrade(r.Header) {
		p.serveUpgrade(w, r, path, raw, start)
		return
	}

	// Buffer the body when it is small enough to be sent again.
	var (
		buf        []byte
		stream     io.Reader // a body too large to replay, sent once
		replayable = true
	)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if r.ContentLength > o.MaxReplayBody {
			replayable, stream = false, r.Body
		} else {
			b, err := io.ReadAll(io.LimitReader(r.Body, o.MaxReplayBody+1))
			switch {
			case err != nil:
				p.finish(start, classError)
				writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
				return
			case int64(len(b)) > o.MaxReplayBody:
				replayable, stream = false, io.MultiReader(bytes.NewReader(b), r.Body)
			default:
				buf = b
			}
		}
	}
	target, ok := requestTarget(path, raw, r.URL.RawQuery)
	if !ok {
		p.finish(start, classError)
		writeError(w, http.StatusBadRequest, "invalid request target")
		return
	}
	out := &outRequest{method: r.Method, target: target, header: outHeader(r, o), body: buf, stream: stream, length: r.ContentLength}

	var tried []*endpoint
	for attempt := 1; ; attempt++ {
		e, wait, err := p.acquire(ctx, tried)
		if wait > 0 {
			p.m.queueWait.Observe(wait.Seconds())
		}
		if err != nil {
			p.failAcquire(w, ctx, start, err, o)
			return
		}
		resp, err := e.up.roundTrip(ctx, out)
		if err == nil {
			p.respond(w, r, resp, e, start)
			return
		}
		if ctx.Err() != nil {
			p.release(e, false, "")
			p.finish(start, classCanceled)
			return
		}
		p.release(e, true, err.Error())
		if attempt >= o.Attempts || !replayable || !mayRetry(err, r, o.Retry) {
			p.finish(start, classError)
			writeError(w, http.StatusBadGateway, fmt.Sprintf("deployment %s: replica %s failed before answering (attempt %d of %d): %v", p.name, e.id, attempt, o.Attempts, err))
			return
		}
		p.m.retries.Inc()
		tried = append(tried, e)
	}
}

func (p *pool) failAcquire(w http.ResponseWriter, ctx context.Context, start time.Time, err error, o *Options) {
	if ctx.Err() != nil {
		p.finish(start, classCanceled)
		return
	}
	p.finish(start, classError)
	w.Header().Set("Retry-After", "1")
	switch err {
	case errQueueFull:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("deployment %s: overloaded (%d requests waiting)", p.name, o.MaxQueue))
	case errQueueTimeout:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("deployment %s: no ready replica within %v", p.name, o.QueueTimeout))
	default:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("deployment %s: %v", p.name, err))
	}
}

// finish records a request's outcome.
func (p *pool) finish(start time.Time, class int) {
	p.m.requests[class].Inc()
	p.m.duration.Observe(time.Since(start).Seconds())
}

// respond copies a replica's response to the client, flushing each chunk
// of a stream (server-sent events, or any body of unknown length) as it
// arrives.
func (p *pool) respond(w http.ResponseWriter, r *http.Request, resp *http.Response, e *endpoint, start time.Time) {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	h["X-Gpucloud-Replica"] = []string{e.id}
	w.WriteHeader(resp.StatusCode)

	streaming := resp.ContentLength < 0 || isEventStream(resp.Header)
	var rc *http.ResponseController
	if streaming {
		rc = http.NewResponseController(w)
		_ = rc.Flush() // the client sees the headers before the first event
	}
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	var upErr, clientErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				clientErr = werr
				break
			}
			if streaming {
				if ferr := rc.Flush(); ferr != nil {
					clientErr = ferr
					break
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			upErr = err
			break
		}
	}
	bufPool.Put(bp)
	resp.Body.Close() // before the body's end this cancels the replica's work
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	class := resp.StatusCode/100 - 1
	if class < 0 || class > 4 {
		class = classError
	}
	switch {
	case upErr != nil && r.Context().Err() == nil:
		// The replica died mid-response. The client already has headers:
		// abort its connection so it sees an error, not a short body.
		p.release(e, true, "mid-response: "+upErr.Error())
		p.finish(start, classError)
		panic(http.ErrAbortHandler)
	case clientErr != nil || upErr != nil:
		p.release(e, false, "")
		p.finish(start, classCanceled)
	default:
		p.release(e, false, "")
		p.finish(start, class)
	}
}

// serveUpgrade proxies a connection upgrade (WebSocket) to one replica; it
// holds the replica, for draining, until the connection ends. Upgrades are
// not retried.
func (p *pool) serveUpgrade(w http.ResponseWriter, r *http.Request, path, raw string, start time.Time) {
	o := p.opts.Load()
	e, _, err := p.acquire(r.Context(), nil)
	if err != nil {
		p.failAcquire(w, r.Context(), start, err, o)
		return
	}
	failed := false
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", e.addr
			pr.Out.URL.Path, pr.Out.URL.RawPath = path, raw
			pr.Out.Host = ""
			pr.SetXForwarded()
			if !o.ForwardAuthorization {
				pr.Out.Header.Del("Authorization")
			}
		},
		Transport: e.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			failed = r.Context().Err() == nil
			if failed {
				writeError(w, http.StatusBadGateway, fmt.Sprintf("deployment %s: replica %s: %v", p.name, e.id, err))
			}
		},
	}
	rp.ServeHTTP(w, r)
	p.release(e, failed, "upgrade failed")
	if failed {
		p.finish(start, classError)
	} else {
		p.finish(start, 0) // 101
	}
}

// requestTarget is the origin-form target sent to a replica. It is
// refused (ok false) if it would not be one clean token of a request line:
// the server that parsed the client's request leaves little through, but
// the router writes request lines itself, so it checks.
func requestTarget(path, raw, query string) (target string, ok bool) {
	target = (&url.URL{Path: path, RawPath: raw, RawQuery: query}).RequestURI()
	if target == "" || target[0] != '/' {
		return "", false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return "", false
		}
	}
	return target, true
}

// mayRetry applies the retry policy to a failure before any response.
func mayRetry(err error, r *http.Request, policy RetryPolicy) bool {
	if neverSent(err) {
		return true
	}
	switch policy {
	case RetryAll:
		return true
	case RetrySafe:
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
			return true
		}
		return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
	}
	return false
}

// neverSent reports whether err means the request cannot have reached the
// replica: the connection was never made.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Hop-by-hop headers (RFC 9110 section 7.6.1) are the connection's, not
// the message's.
func hopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// outHeader is the header sent to replicas: the client's, less hop-by-hop
// headers and (unless forwarded) Authorization, plus X-Forwarded-*.
func outHeader(r *http.Request, o *Options) http.Header {
	h := make(http.Header, len(r.Header)+4)
	for k, vv := range r.Header {
		// The router writes its own Content-Length and sends bodies at
		// once (so no Expect: 100-continue).
		if hopHeader(k) || k == "Content-Length" || k == "Expect" || (k == "Authorization" && !o.ForwardAuthorization) {
			continue
		}
		h[k] = vv
	}
	for _, c := range r.Header["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
	for _, v := range r.Header["Te"] {
		if strings.Contains(strings.ToLower(v), "trailers") {
			h["Te"] = []string{"trailers"}
		}
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		ip = strings.Join(prior, ", ") + ", " + ip
	}
	h["X-Forwarded-For"] = []string{ip}
	h["X-Forwarded-Host"] = []string{r.Host}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = []string{"https"}
	} else {
		h["X-Forwarded-Proto"] = []string{"http"}
	}
	return h
}

func copyResponseHeader(dst, src http.Header) {
	for k, vv := range src {
		if !hopHeader(k) {
			dst[k] = vv
		}
	}
	for _, c := range src["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(dst, http.CanonicalHeaderKey(f))
			}
		}
	}
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return strings.HasPrefix(strings.ToLower(ct), "text/event-stream")
}

func isUpgrade(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, c := range h["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return true
			}
		}
	}
	return false
}
