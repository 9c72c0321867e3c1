package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// An agent opens its assignment stream the moment its registration is
// acknowledged, on this replica or another: the stream must find the node
// (read your writes), not answer 404 "register first".
func TestAssignmentStreamRightAfterRegistration(t *testing.T) {
	ts := startServer(t, nil)
	other, err := New(Config{Listen: "127.0.0.1:0", Store: ts.Store(), Logger: quietLogger(), CycleInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- other.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-other.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	replicas := map[string]*client.Client{"same replica": ts.admin, "other replica": client.New([]string{"http://" + other.Addr()}, ts.token, client.Options{})}
	for where, streamer := range replicas {
		for i := range 20 {
			name := fmt.Sprintf("n-%d-%d", len(where), i)
			if _, err := ts.admin.Register(ctx, registration(name, 1)); err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithTimeout(ctx, 10*time.Second)
			got := false
			err := streamer.WatchAssignments(sctx, name, func(set api.AssignmentSet) error {
				got = set.Node == name
				stop()
				return nil
			})
			stop()
			if !got {
				t.Fatalf("%s: the assignment stream of %s, opened right after its registration: %v", where, name, err)
			}
		}
	}
}
