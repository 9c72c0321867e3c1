// Package client is the Go client of the gpucloud HTTP API, used by the
// CLI, the node agent and the bench.
//
// A client may know several server replicas: a request that cannot reach
// one (connection refused, 503 while a replica catches up) goes to the
// next. Job submissions carry a client-made ID, so retrying one after a
// lost answer never makes a duplicate.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gpucloud/internal/api"
)

// Error is an error answer of the API.
type Error struct {
	Code   int
	Msg    string
	Fields []api.FieldError
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Msg) }

// IsCode reports whether err is an API error with this status code.
func IsCode(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Client talks to one or more replicas of the API.
type Client struct {
	urls  []string
	token string
	http  *http.Client
	cur   atomic.Int32
	// Retry bounds how long a call keeps trying other replicas (default
	// 30s; failover of the leader takes a few seconds).
	Retry time.Duration
}

// Options configure a client.
type Options struct {
	// InsecureSkipVerify accepts any TLS certificate (self-signed test
	// setups).
	InsecureSkipVerify bool
	// Timeout bounds one request (default 30s; streams have none).
	Timeout   time.Duration
	Transport *http.Transport
}

// New makes a client of the servers at urls ("http://host:8080",
// comma-separated lists are split).
func New(urls []string, token string, o Options) *Client {
	var us []string
	for _, u := range urls {
		for _, p := range strings.Split(u, ",") {
			if p = strings.TrimRight(strings.TrimSpace(p), "/"); p != "" {
				if !strings.Contains(p, "://") {
					p = "http://" + p
				}
				us = append(us, p)
			}
		}
	}
	tr := o.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		tr.MaxIdleConns = 1024
	}
	if o.InsecureSkipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	return &Client{urls: us, token: token, http: &http.Client{Transport: tr, Timeout: o.Timeout}, Retry: 30 * time.Second}
}

// NewJobID makes a job ID on the client side (the server's format), so a
// submission can be retried safely.
func NewJobID() string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	ms := strconv.FormatInt(time.Now().UnixMilli(), 36)
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = digits[int(b[i])%36]
	}
	return "j" + ms + string(b)
}

// retryable errors are those another replica, or the same one a moment
// later, may not give.
func retryable(err error, code int) bool {
	if err != nil {
		var ne net.Error
		var oe *net.OpError
		return errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
			strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "connection refused")
	}
	return code == http.StatusServiceUnavailable || code == http.StatusBadGateway
}

// Do sends a request and decodes a JSON answer into out (when not nil).
// body is JSON-encoded unless it is []byte (sent as is, JSON or YAML).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
		if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
			ctype = "application/yaml"
		}
	default:
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(c.Retry)
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		i := int(c.cur.Load()) % len(c.urls)
		resp, err := c.send(ctx, c.urls[i], method, path, payload, ctype)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		if !retryable(err, code) || ctx.Err() != nil || time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return decode(resp, out)
		}
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		// Try the next replica; after a full round, back off.
		c.cur.CompareAndSwap(int32(i), int32((i+1)%len(c.urls)))
		if (attempt+1)%len(c.urls) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
		}
	}
}

func (c *Client) send(ctx context.Context, base, method, path string, payload []byte, ctype string) (*http.Response, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.http.Do(req)
}

func decode(resp *http.Response, out any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e api.ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &Error{Code: resp.StatusCode, Msg: e.Error, Fields: e.Fields}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding %s answer: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// Stream opens a long-lived GET (server-sent events or a log) on the
// current replica.
func (c *Client) Stream(ctx context.Context, path string) (*http.Response, error) {
	i := int(c.cur.Load()) % len(c.urls)
	req, err := http.NewRequestWithContext(ctx, "GET", c.urls[i]+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		c.cur.CompareAndSwap(int32(i), int32((i+1)%len(c.urls)))
		return nil, err
	}
	if resp.StatusCode >= 400 {
		return nil, decode(resp, nil)
	}
	return resp, nil
}

// SSE reads server-sent events from r and calls fn with each event's name
// and data until r ends or fn returns an error.
func SSE(r io.Reader, fn func(event string, data []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var event string
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				if err := fn(event, bytes.TrimSuffix(data.Bytes(), []byte("\n"))); err != nil {
					return err
				}
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			data.WriteString(strings.TrimPrefix(line[5:], " "))
			data.WriteByte('\n')
		}
	}
	return sc.Err()
}

func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
