package store

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Event is one change seen by a watch.
type Event struct {
	Deleted bool
	KV      KV // for a delete, Key and ModRev only
}

// Handler receives the state under a prefix: a full snapshot, then
// changes. Calls come from one goroutine.
type Handler interface {
	// Reset replaces everything known with kvs, read at rev.
	Reset(kvs []KV, rev int64)
	// Apply applies the changes of one watch response (rev is the header
	// revision: nothing at or below it is still to come).
	Apply(evs []Event, rev int64)
}

// Reflect keeps h in step with the keys under prefix until ctx ends: it
// lists, then watches from the next revision; when the watch breaks (etcd
// member lost, history compacted) it lists again. That is the informer
// pattern of Kubernetes, on etcd directly.
func (s *Store) Reflect(ctx context.Context, prefix string, h Handler) error {
	for ctx.Err() == nil {
		kvs, rev, err := s.List(ctx, prefix)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.log.Warn("store: list failed, retrying", "prefix", prefix, "err", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		h.Reset(kvs, rev)
		err = s.watch(ctx, prefix, rev+1, h)
		if ctx.Err() != nil {
			break
		}
		s.log.Info("store: watch ended, listing again", "prefix", prefix, "err", err)
	}
	return ctx.Err()
}

func (s *Store) watch(ctx context.Context, prefix string, from int64, h Handler) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return err
			}
			return err
		}
		evs := make([]Event, 0, len(resp.Events))
		for _, e := range resp.Events {
			k := e.Kv
			evs = append(evs, Event{
				Deleted: e.Type == clientv3.EventTypeDelete,
				KV:      KV{Key: string(k.Key), Value: k.Value, ModRev: k.ModRevision, CreateRev: k.CreateRevision, Lease: k.Lease},
			})
		}
		h.Apply(evs, resp.Header.Revision)
	}
	return errors.New("watch channel closed")
}

// RequestProgress asks etcd to tell the watches of this client the
// current revision, so a cache can prove it is up to date without a change
// under its prefix.
func (s *Store) RequestProgress(ctx context.Context) error {
	return s.cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}
