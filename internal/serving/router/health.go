package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// checkLoop checks one replica until it leaves the pool: at
// StartupInterval while it is not in the rotation (so it joins soon after
// its model loads, and an ejected one comes back soon), at CheckInterval
// once it is, and at once when a request on it failed.
func (p *pool) checkLoop(e *endpoint) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-e.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
		opts := p.opts.Load()
		err := check(e, opts)
		p.mu.Lock()
		p.applyCheckLocked(e, err)
		next := opts.CheckInterval
		if !e.healthy || e.ejected {
			next = opts.StartupInterval
		}
		p.mu.Unlock()
		t.Reset(next)
	}
}

// applyCheckLocked updates e's readiness from one check.
func (p *pool) applyCheckLocked(e *endpoint, err error) {
	if e.removed {
		return
	}
	if err == nil {
		e.fails = 0
		if e.ejected && nowNs() < e.ejectUntil {
			return // an outlier serves its time, passing checks or not
		}
		if !e.healthy || e.ejected {
			was := e.healthy
			e.healthy, e.ejected = true, false
			if !was {
				p.log.Info("replica ready", "replica", e.id, "addr", e.addr)
			}
			p.dispatchLocked()
		}
		return
	}
	e.fails++
	e.lastErr = err.Error()
	if e.healthy && e.fails >= p.opts.Load().FailureThreshold {
		e.healthy = false
		p.log.Warn("replica not ready", "replica", e.id, "addr", e.addr, "error", err, "failures", e.fails)
	}
}

// check runs one readiness check: GET of the readiness path, or a TCP
// connection when there is none.
func check(e *endpoint, o *Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.CheckTimeout)
	defer cancel()
	if o.ReadinessPath == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", e.addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.addr+o.ReadinessPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "gpucloud-router/health")
	resp, err := e.transport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("readiness %s: status %d", o.ReadinessPath, resp.StatusCode)
	}
	return nil
}
