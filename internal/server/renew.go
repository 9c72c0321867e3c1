package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// renewer renews node leases in the background. A heartbeat is answered
// as soon as it is recorded; the lease behind it is renewed within
// renewEvery. That keeps etcd off the heartbeat's path: a lease renewal
// waits for etcd to apply everything committed before it, and under a
// burst of writes (thousands of placements) that wait reached seconds.
// A lease etcd no longer knows is remembered, and the node's next
// heartbeat is told to register again (410).
type renewer struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]int64 // node -> lease to renew
	gone    map[int64]bool   // leases etcd no longer has
}

const renewEvery = 250 * time.Millisecond

func newRenewer(s *Server) *renewer {
	return &renewer{s: s, pending: map[string]int64{}, gone: map[int64]bool{}}
}

// note records a heartbeat; it reports false when the lease is known to be
// gone.
func (r *renewer) note(node string, lease int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone[lease] {
		return false
	}
	r.pending[node] = lease
	return true
}

func (r *renewer) run(ctx context.Context) {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		batch := r.pending
		r.pending = make(map[string]int64, len(batch))
		r.mu.Unlock()
		r.renew(ctx, batch)
	}
}

func (r *renewer) renew(ctx context.Context, batch map[string]int64) {
	work := make(chan int64)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lease := range work {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := r.s.store.Client().KeepAliveOnce(cctx, clientv3.LeaseID(lease))
				cancel()
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					r.mu.Lock()
					r.gone[lease] = true
					r.mu.Unlock()
				}
			}
		}()
	}
	seen := map[int64]bool{}
	for _, lease := range batch {
		if !seen[lease] {
			seen[lease] = true
			select {
			case work <- lease:
			case <-ctx.Done():
			}
		}
	}
	close(work)
	wg.Wait()
	// Forget old verdicts now and then; lease IDs are not reused soon.
	r.mu.Lock()
	if len(r.gone) > 100000 {
		r.gone = map[int64]bool{}
	}
	r.mu.Unlock()
}
