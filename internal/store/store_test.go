package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gpucloud/internal/testnet"
)

// startStore runs a real single-member etcd (fsync off: a test) and a
// client on it.
func startStore(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	e, err := StartMember(ctx, MemberConfig{
		Dir:       t.TempDir(),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		NoFsync:   true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	s, err := Open(ctx, e.Endpoints, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type recorder struct {
	mu    sync.Mutex
	state map[string]string
	rev   int64
}

func (r *recorder) Reset(kvs []KV, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = map[string]string{}
	for _, kv := range kvs {
		r.state[kv.Key] = string(kv.Value)
	}
	r.rev = rev
}

func (r *recorder) Apply(evs []Event, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		if e.Deleted {
			delete(r.state, e.KV.Key)
		} else {
			r.state[e.KV.Key] = string(e.KV.Value)
		}
	}
	r.rev = rev
}

func TestStoreOperations(t *testing.T) {
	s := startStore(t)
	ctx := context.Background()
	k := JobsKey + "a"
	rev, err := s.Create(ctx, k, []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, k, []byte("2")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := s.CAS(ctx, k, []byte("3"), rev-1); !errors.Is(err, ErrConflict) {
		t.Fatalf("CAS on an old revision: %v", err)
	}
	rev2, err := s.CAS(ctx, k, []byte("3"), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("CAS: %d %v", rev2, err)
	}
	kv, err := s.Get(ctx, k)
	if err != nil || string(kv.Value) != "3" || kv.ModRev != rev2 {
		t.Fatalf("get: %+v %v", kv, err)
	}
	if _, err := s.Get(ctx, JobsKey+"missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}

	// List pages through more keys than one page holds.
	for i := 0; i < 5100; i += 100 {
		var ops []string
		for j := i; j < i+100; j++ {
			ops = append(ops, fmt.Sprintf("%sn%05d", NodesKey, j))
		}
		for _, o := range ops {
			if _, err := s.Put(ctx, o, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	kvs, _, err := s.List(ctx, NodesKey)
	if err != nil || len(kvs) != 5100 {
		t.Fatalf("list: %d %v", len(kvs), err)
	}
}

func TestReflect(t *testing.T) {
	s := startStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Put(ctx, QueuesKey+"before", []byte("b")); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	go s.Reflect(ctx, Prefix, r)
	rev, _ := s.Put(ctx, QueuesKey+"after", []byte("a"))
	s.Delete(ctx, QueuesKey+"before", false)
	s.Put(ctx, EventsKey+"outside", []byte("not seen"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		done := r.rev > rev && len(r.state) == 1 && r.state[QueuesKey+"after"] == "a"
		r.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache did not converge: %+v", r.state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
