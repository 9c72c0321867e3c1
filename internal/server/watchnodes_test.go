package server

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// nodeWatch follows GET /v1/watch/nodes and hands every event on.
func nodeWatch(t *testing.T, ctx context.Context, c *client.Client) <-chan api.WatchEvent[api.Node] {
	t.Helper()
	resp, err := c.Stream(ctx, "/v1/watch/nodes")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan api.WatchEvent[api.Node], 256)
	go func() {
		defer resp.Body.Close()
		client.SSE(resp.Body, func(_ string, data []byte) error {
			var ev api.WatchEvent[api.Node]
			if err := json.Unmarshal(data, &ev); err != nil {
				return err
			}
			out <- ev
			return nil
		})
		close(out)
	}()
	return out
}

// waitNodeEvent reads events until one of node name matches ok.
func waitNodeEvent(t *testing.T, evs <-chan api.WatchEvent[api.Node], name, what string, ok func(n *api.Node) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case ev, open := <-evs:
			if !open {
				t.Fatalf("node watch ended waiting for %s; saw %v", what, seen)
			}
			n := &ev.Object
			if n.Metadata.Name != name {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s %s alloc=%d", ev.Type, n.Status.Phase, n.Status.GPUsAllocated))
			if ok(n) {
				return
			}
		case <-deadline:
			t.Fatalf("no node event with %s; saw %v", what, seen)
		}
	}
}

// The node watch carries what the dashboard draws: the lease's phase
// (Ready -> Down -> Ready) and the GPUs allocated as jobs start and end.
func TestNodeWatchSeesLeaseAndAllocation(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.NodeLeaseTTL = 2 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := nodeWatch(t, ctx, ts.admin)
	a := startFakeAgent(t, ts.admin, "n1", 2, hold)
	waitNodeEvent(t, evs, "n1", "Ready", func(n *api.Node) bool { return n.Status.Phase == api.NodeReady })

	j, err := ts.admin.Submit(ctx, testJob("w", 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	waitNodeEvent(t, evs, "n1", "2 GPUs allocated", func(n *api.Node) bool { return n.Status.GPUsAllocated == 2 })
	if _, err := ts.admin.Cancel(ctx, j.Metadata.ID); err != nil {
		t.Fatal(err)
	}
	waitNodeEvent(t, evs, "n1", "0 GPUs allocated", func(n *api.Node) bool { return n.Status.GPUsAllocated == 0 })

	a.stop() // no more heartbeats: the lease expires
	waitNodeEvent(t, evs, "n1", "Down", func(n *api.Node) bool { return n.Status.Phase == api.NodeDown })
	startFakeAgent(t, ts.admin, "n1", 2, hold)
	waitNodeEvent(t, evs, "n1", "Ready again", func(n *api.Node) bool { return n.Status.Phase == api.NodeReady })
}
