package router

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"
)

// upstream is the router's HTTP/1.1 client for one replica: a stack of
// keep-alive connections used by one request at a time, from the
// request's own goroutine. net/http's Transport hands every request to a
// reader and a writer goroutine per connection; doing the exchange in
// place costs a quarter to a third less CPU per request, which is most of what
// the router adds. Connection upgrades and health checks still use a
// Transport.
type upstream struct {
	addr          string
	dialer        net.Dialer
	maxIdle       int
	idleTimeout   time.Duration
	headerTimeout time.Duration

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	closed bool
}

type upConn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

// outRequest is a request as sent to a replica.
type outRequest struct {
	method string
	target string // request-target: escaped path and query
	header http.Header
	body   []byte    // a body that can be sent again
	stream io.Reader // or one sent once,
	length int64     // of this length (-1: unknown, sent chunked)
}

// aLongTimeAgo poisons a connection's deadline to interrupt a blocked
// read or write.
var aLongTimeAgo = time.Unix(1, 0)

func newUpstream(addr string, o *Options) *upstream {
	return &upstream{
		addr:          addr,
		dialer:        net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
		maxIdle:       o.MaxIdleConnsPerReplica,
		idleTimeout:   90 * time.Second,
		headerTimeout: o.ResponseHeaderTimeout,
	}
}

// get returns a live idle connection, or dials one.
func (u *upstream) get(ctx context.Context) (*upConn, error) {
	now := time.Now()
	for {
		u.mu.Lock()
		n := len(u.idle)
		if n == 0 {
			u.mu.Unlock()
			break
		}
		c := u.idle[n-1]
		u.idle[n-1] = nil
		u.idle = u.idle[:n-1]
		u.mu.Unlock()
		// A connection the replica closed while it sat idle (keep-alive
		// timeout, a restart) would fail the request for nothing.
		if now.Sub(c.idleAt) < u.idleTimeout && c.alive() {
			return c, nil
		}
		c.conn.Close()
	}
	conn, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, err
	}
	return &upConn{conn: conn, br: bufio.NewReaderSize(conn, 16<<10), bw: bufio.NewWriterSize(conn, 16<<10)}, nil
}

func (u *upstream) put(c *upConn) {
	c.idleAt = time.Now()
	u.mu.Lock()
	if u.closed || len(u.idle) >= u.maxIdle {
		u.mu.Unlock()
		c.conn.Close()
		return
	}
	u.idle = append(u.idle, c)
	u.mu.Unlock()
}

// closeIdle closes the idle connections; close also refuses to keep any
// more.
func (u *upstream) closeIdle(close bool) {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.closed = u.closed || close
	u.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
}

// roundTrip sends r and reads the response headers. The caller must read
// the body to its end (the connection then goes back to the idle stack) or
// close it. Cancelling ctx interrupts the exchange at any point.
func (u *upstream) roundTrip(ctx context.Context, r *outRequest) (*http.Response, error) {
	c, err := u.get(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := writeRequest(c.bw, u.addr, r); err != nil {
		return fail(err)
	}
	if u.headerTimeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(u.headerTimeout))
	}
	req := &http.Request{Method: r.method}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one.
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	if u.headerTimeout > 0 {
		c.conn.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			c.conn.SetDeadline(aLongTimeAgo)
		}
	}
	resp.Body = &upBody{u: u, c: c, body: resp.Body, stop: stop, reuse: !resp.Close}
	return resp, nil
}

// writeRequest writes r in HTTP/1.1. The header comes from a request the
// server already parsed (and the router's own additions), so it needs no
// validation here.
func writeRequest(bw *bufio.Writer, host string, r *outRequest) error {
	bw.WriteString(r.method)
	bw.WriteByte(' ')
	bw.WriteString(r.target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range r.header {
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	var err error
	switch {
	case r.stream != nil && r.length < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(bw)
		if _, err = io.Copy(cw, r.stream); err == nil {
			err = cw.Close()
		}
		bw.WriteString("\r\n")
	case r.stream != nil:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.length, 10))
		bw.WriteString("\r\n\r\n")
		_, err = io.CopyN(bw, r.stream, r.length)
	case len(r.body) > 0 || r.method == http.MethodPost || r.method == http.MethodPut || r.method == http.MethodPatch:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(len(r.body)))
		bw.WriteString("\r\n\r\n")
		bw.Write(r.body)
	default:
		bw.WriteString("\r\n")
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// upBody returns the connection to the idle stack when the body has been
// read to its end, and closes it otherwise.
type upBody struct {
	u     *upstream
	c     *upConn
	body  io.ReadCloser
	stop  func() bool
	reuse bool
	done  bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.release(false)
	return nil
}

func (b *upBody) release(atEOF bool) {
	if b.done {
		return
	}
	b.done = true
	// stop is false when ctx fired: the deadline may be poisoned.
	if b.stop() && atEOF && b.reuse {
		b.u.put(b.c)
		return
	}
	// Closing the connection first: http's body would otherwise read the
	// rest of a stream the client no longer wants.
	b.c.conn.Close()
	b.body.Close()
}
