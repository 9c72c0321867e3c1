package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/testbin"
	"gpucloud/internal/testnet"
)

// TestHAFailover runs three etcd members and two server replicas as
// separate processes, kills the etcd leader and the active server at the
// same moment with SIGKILL, and measures how long submissions and
// scheduling take to resume. Nothing acknowledged may be lost.
// GPUCLOUD_HA_REPORT=file writes the figures as JSON.
func TestHAFailover(t *testing.T) {
	testbin.Gpucloud(t)
	ctx := context.Background()
	root := t.TempDir()

	// Three etcd members.
	var peers, clientURLs []string
	var names []string
	type member struct{ client, peer string }
	var ms []member
	for i := 1; i <= 3; i++ {
		m := member{fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)), fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t))}
		ms = append(ms, m)
		names = append(names, fmt.Sprintf("m%d", i))
		peers = append(peers, fmt.Sprintf("m%d=%s", i, m.peer))
		clientURLs = append(clientURLs, m.client)
	}
	var etcds []*proc
	for i, m := range ms {
		etcds = append(etcds, startProc(t, names[i], "etcd", "--name", names[i], "--data-dir", filepath.Join(root, names[i]),
			"--client-url", m.client, "--peer-url", m.peer, "--initial-cluster", strings.Join(peers, ",")))
	}
	endpoints := strings.Join(clientURLs, ",")

	// Two server replicas on the cluster.
	var servers []*proc
	var urls, dirs []string
	for i := 0; i < 2; i++ {
		port := testnet.FreePort(t)
		dir := filepath.Join(root, fmt.Sprintf("server%d", i))
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", port))
		dirs = append(dirs, dir)
		servers = append(servers, startProc(t, fmt.Sprintf("server%d", i), "server", "--etcd-endpoints", endpoints,
			"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dir, "--leader-ttl", "5",
			"--node-lease-ttl", "20s", "--cycle-interval", "50ms", "--log-level", "info"))
	}
	for _, u := range urls {
		waitHTTP(t, u, 60*time.Second)
	}
	admin := client.New(urls, readToken(t, dirs...), client.Options{Timeout: 10 * time.Second})
	admin.Retry = 60 * time.Second

	exit := func(a api.Assignment, p api.Process) (int, bool) { return 0, strings.HasPrefix(a.Name, "keep") }
	startFakeAgent(t, admin, "node-a", 8, exit)
	kj, err := admin.Submit(ctx, testJob("keep", 1, 4))
	if err != nil {
		t.Fatal(err)
	}
	running := waitPhase(t, admin, kj.Metadata.ID, api.PhaseRunning, 30*time.Second)

	sub := startSubmitter(admin, 5*time.Millisecond, func(i int) *api.Job { return testJob(fmt.Sprintf("short-%d", i), 1, 1) })
	time.Sleep(1500 * time.Millisecond)

	// Who leads etcd, and which replica schedules?
	ecli, err := clientv3.New(clientv3.Config{Endpoints: clientURLs, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ecli.Close()
	etcdLeader := -1
	for i, u := range clientURLs {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := ecli.Status(sctx, u)
		cancel()
		if err == nil && st.Header.MemberId == st.Leader {
			etcdLeader = i
		}
	}
	active := -1
	for i, u := range urls {
		var ci ClusterInfo
		if client.New([]string{u}, "", client.Options{}).Do(ctx, "GET", "/readyz", nil, &ci) == nil && ci.Leader {
			active = i
		}
	}
	if etcdLeader < 0 || active < 0 {
		t.Fatalf("etcd leader %d, active server %d", etcdLeader, active)
	}
	survivor := urls[1-active]

	t0 := time.Now()
	etcds[etcdLeader].kill()
	servers[active].kill()
	t.Logf("killed etcd leader %s and active server %s", names[etcdLeader], urls[active])

	// The survivor takes over the scheduler.
	probe := client.New([]string{survivor}, "", client.Options{Timeout: 2 * time.Second})
	probe.Retry = 0
	var tLeader time.Time
	waitFor(t, 60*time.Second, "the surviving replica to lead", func() bool {
		var ci ClusterInfo
		if probe.Do(ctx, "GET", "/readyz", nil, &ci) == nil && ci.Leader {
			tLeader = time.Now()
			return true
		}
		return false
	})
	time.Sleep(3 * time.Second)
	sub.finish()
	tAck := sub.firstAckAfter(t0)
	if tAck.IsZero() {
		t.Fatalf("no submission acknowledged after the kills (%d errors)", sub.errs)
	}

	// Nothing acknowledged is lost; everything converges.
	waitFor(t, 60*time.Second, "short jobs to succeed", func() bool {
		l, err := admin.Jobs(ctx, client.JobFilter{Limit: 100000})
		if err != nil {
			return false
		}
		for _, j := range l.Items {
			if strings.HasPrefix(j.Metadata.Name, "short") && j.Status.Phase != api.PhaseSucceeded {
				return false
			}
		}
		return true
	})
	all := checkNothingLost(t, admin, sub)
	// Scheduling resumed with the first placement after the kills.
	var tSched time.Time
	for _, j := range all {
		if at := j.Status.StartedAt; at.After(t0) && (tSched.IsZero() || at.Before(tSched)) {
			tSched = at
		}
	}
	if tSched.IsZero() {
		t.Fatal("nothing was placed after the kills")
	}
	allocationsFit(t, all, 8)
	after, err := admin.Job(ctx, kj.Metadata.ID)
	if err != nil || after.Status.Phase != api.PhaseRunning || after.Status.Generation != running.Status.Generation {
		t.Fatalf("the running gang did not survive the failover: %+v %v", after.Status, err)
	}
	sub.mu.Lock()
	acked := len(sub.acked)
	sub.mu.Unlock()
	report := map[string]any{
		"submissions_resumed_s":     tAck.Sub(t0).Seconds(),
		"scheduler_leader_s":        tLeader.Sub(t0).Seconds(),
		"scheduling_resumed_s":      tSched.Sub(t0).Seconds(),
		"acknowledged_submissions":  acked,
		"leader_ttl_s":              5,
		"etcd_members":              3,
		"server_replicas":           2,
		"killed":                    []string{names[etcdLeader] + " (etcd leader)", "server" + fmt.Sprint(active) + " (active)"},
		"acknowledged_jobs_missing": 0,
	}
	b, _ := json.MarshalIndent(report, "", "  ")
	t.Logf("failover: %s", b)
	if p := os.Getenv("GPUCLOUD_HA_REPORT"); p != "" {
		os.WriteFile(p, b, 0o644)
	}
}
