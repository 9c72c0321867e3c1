// Package store keeps gpucloud's state in etcd: an embedded single member
// by default, an external cluster for high availability. It knows keys,
// revisions and transactions, not resource types: the server decodes.
//
// Every call runs under a short per-call timeout and is retried while the
// caller's context allows, because a clientv3 call in flight when the etcd
// leader dies otherwise hangs for the gRPC default (seconds) before it fails
// over (FIELD-NOTES).
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Key prefixes. State that the server caches lives under Prefix; events,
// logs and the leader election live beside it so that the cache's watch
// does not carry them.
const (
	Prefix       = "/gpucloud/"
	TenantsKey   = Prefix + "tenants/"
	TokensKey    = Prefix + "tokens/"
	QueuesKey    = Prefix + "queues/"
	JobsKey      = Prefix + "jobs/"
	NodesKey     = Prefix + "nodes/"
	AliveKey     = Prefix + "alive/"   // one per live node, on the node's lease
	ReportsKey   = Prefix + "reports/" // reports/<job>/<node>: rank states of the current generation
	BootstrapKey = Prefix + "bootstrap"
	EventsKey    = "/gpucloud-events/"
	LogsKey      = "/gpucloud-logs/"
	LeaderKey    = "/gpucloud-leader/"
	ReplicasKey  = "/gpucloud-replicas/" // replicas/<ID>: the API URL of a running replica, on its session's lease
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict: changed since read")
)

// Options tune a store client.
type Options struct {
	// CallTimeout bounds one attempt of one call (default 2s).
	CallTimeout time.Duration
	Logger      *slog.Logger
}

// Store is a client of the etcd cluster holding gpucloud's state.
type Store struct {
	cli     *clientv3.Client
	timeout time.Duration
	log     *slog.Logger
}

// Open connects to etcd.
func Open(ctx context.Context, endpoints []string, o Options) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("store: no etcd endpoints")
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               errorLogger(),
		Context:              ctx,
		MaxCallSendMsgSize:   8 << 20,
		MaxCallRecvMsgSize:   256 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	s := &Store{cli: cli, timeout: o.CallTimeout, log: o.Logger}
	// Fail fast on a wrong endpoint rather than at the first request.
	if _, err := s.Get(ctx, BootstrapKey); err != nil && !errors.Is(err, ErrNotFound) {
		cli.Close()
		return nil, fmt.Errorf("store: etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return s, nil
}

// errorLogger keeps etcd's own logs to errors, minus the ones every
// shutdown prints ("setting up serving from embedded etcd failed ... server
// closed"): a real serving failure also surfaces through Etcd.Err().
func errorLogger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.ErrorLevel)
	return zap.New(quietCore{core})
}

type quietCore struct{ zapcore.Core }

func (c quietCore) With(f []zapcore.Field) zapcore.Core { return quietCore{c.Core.With(f)} }

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if strings.HasPrefix(e.Message, "setting up serving from embedded etcd failed") {
		return ce
	}
	return c.Core.Check(e, ce)
}

// Client is the etcd client, for elections, leases and watches.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close closes the client.
func (s *Store) Close() error { return s.cli.Close() }

// retry runs op with a per-attempt timeout until it succeeds, fails for
// a reason that retrying does not cure, or ctx ends.
func (s *Store) retry(ctx context.Context, op func(ctx context.Context) error) error {
	backoff := 20 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := op(cctx)
		cancel()
		if err == nil || !retryable(ctx, err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrConflict) {
		return false
	}
	msg := err.Error()
	// Request-shaped errors fail the same way every time.
	for _, perm := range []string{"request is too large", "too many operations", "invalid", "permission denied", "exceeded", "not found"} {
		if strings.Contains(msg, perm) && !strings.Contains(msg, "deadline exceeded") {
			return false
		}
	}
	return true
}

// Do runs op (a call on Client()) with the store's per-call timeout and
// retries.
func (s *Store) Do(ctx context.Context, op func(ctx context.Context) error) error {
	return s.retry(ctx, op)
}

// KV is a stored value with its revisions.
type KV struct {
	Key       string
	Value     []byte
	ModRev    int64
	CreateRev int64
	Lease     int64
}

// Get reads one key (linearizable).
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	var kv KV
	err := s.retry(ctx, func(ctx context.Context) error {
		r, err := s.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 {
			return fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		k := r.Kvs[0]
		kv = KV{Key: string(k.Key), Value: k.Value, ModRev: k.ModRevision, CreateRev: k.CreateRevision, Lease: k.Lease}
		return nil
	})
	return kv, err
}

// List reads every key under prefix, in pages, at one revision.
func (s *Store) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	var out []KV
	var rev int64
	start := prefix
	end := clientv3.GetPrefixRangeEnd(prefix)
	for {
		var r *clientv3.GetResponse
		err := s.retry(ctx, func(cctx context.Context) error {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(5000)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			var err error
			r, err = s.cli.Get(cctx, start, opts...)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = r.Header.Revision
		}
		for _, k := range r.Kvs {
			out = append(out, KV{Key: string(k.Key), Value: k.Value, ModRev: k.ModRevision, CreateRev: k.CreateRevision, Lease: k.Lease})
		}
		if !r.More || len(r.Kvs) == 0 {
			return out, rev, nil
		}
		start = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// Txn runs one transaction: if every compare holds, ops apply together.
// It answers ErrConflict when a compare failed. A transaction whose answer
// was lost (timeout) is retried only when check says it did not apply.
func (s *Store) Txn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (int64, error) {
	var rev int64
	err := s.retry(ctx, func(cctx context.Context) error {
		r, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if !r.Succeeded {
			return ErrConflict
		}
		rev = r.Header.Revision
		return nil
	})
	return rev, err
}

// Create writes key only if it does not exist. A retry after a lost answer
// that finds the very same value reports success, so creates are
// idempotent under failover.
func (s *Store) Create(ctx context.Context, key string, val []byte, extra ...clientv3.Op) (int64, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(val))}, extra...)
	attempt := 0
	var rev int64
	err := s.retry(ctx, func(cctx context.Context) error {
		attempt++
		r, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if r.Succeeded {
			rev = r.Header.Revision
			return nil
		}
		kvs := r.Responses[0].GetResponseRange().Kvs
		if attempt > 1 && len(kvs) == 1 && bytes.Equal(kvs[0].Value, val) {
			rev = kvs[0].ModRevision
			return nil
		}
		return fmt.Errorf("%s: %w", key, ErrExists)
	})
	return rev, err
}

// Put writes key unconditionally.
func (s *Store) Put(ctx context.Context, key string, val []byte, opts ...clientv3.OpOption) (int64, error) {
	var rev int64
	err := s.retry(ctx, func(cctx context.Context) error {
		r, err := s.cli.Put(cctx, key, string(val), opts...)
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	return rev, err
}

// CAS replaces key if its ModRevision is still modRev (0: must not exist).
// A retry after a lost answer that finds our own value reports success.
func (s *Store) CAS(ctx context.Context, key string, val []byte, modRev int64, extra ...clientv3.Op) (int64, error) {
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(val))}, extra...)
	attempt := 0
	var rev int64
	err := s.retry(ctx, func(cctx context.Context) error {
		attempt++
		r, err := s.cli.Txn(cctx).If(cmp).Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if r.Succeeded {
			rev = r.Header.Revision
			return nil
		}
		kvs := r.Responses[0].GetResponseRange().Kvs
		if attempt > 1 && len(kvs) == 1 && bytes.Equal(kvs[0].Value, val) {
			rev = kvs[0].ModRevision
			return nil
		}
		return fmt.Errorf("%s: %w", key, ErrConflict)
	})
	return rev, err
}

// Delete removes key (or every key under it with prefix).
func (s *Store) Delete(ctx context.Context, key string, prefix bool) error {
	return s.retry(ctx, func(cctx context.Context) error {
		var opts []clientv3.OpOption
		if prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		_, err := s.cli.Delete(cctx, key, opts...)
		return err
	})
}

// Revision returns the cluster's current revision (a linearizable read).
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.retry(ctx, func(cctx context.Context) error {
		r, err := s.cli.Get(cctx, BootstrapKey, clientv3.WithCountOnly())
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	return rev, err
}
