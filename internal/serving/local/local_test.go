package local

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/serving"
)

func newDriver(t *testing.T, grace time.Duration) *Driver {
	t.Helper()
	d, err := New(Config{Dir: t.TempDir(), Grace: grace, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func waitExited(t *testing.T, d *Driver, id string) serving.Replica {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rs, _ := d.Replicas(context.Background(), "m")
		for _, r := range rs {
			if r.ID == id && r.Phase == serving.Exited {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("replica %s did not exit", id)
	return serving.Replica{}
}

func TestPortEnvironmentAndLog(t *testing.T) {
	d := newDriver(t, time.Second)
	id, err := d.Start(context.Background(), serving.ReplicaSpec{Deployment: "m", Revision: "r1", Template: serving.Template{
		Command: []string{"sh", "-c", `echo "port=$PORT arg=$0 model=$MODEL dep=$GPUCLOUD_DEPLOYMENT rev=$GPUCLOUD_REVISION"`, "$PORT"},
		Env:     map[string]string{"MODEL": "tiny"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := waitExited(t, d, id)
	if !r.Failed || r.ExitCode != 0 {
		// It exited on its own: a failure for a server, with its code.
		t.Fatalf("exit: %+v", r)
	}
	_, port, _ := strings.Cut(r.Addr, ":")
	log, err := os.ReadFile(filepath.Join(d.cfg.Dir, id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	want := "port=" + port + " arg=" + port + " model=tiny dep=m rev=r1\n"
	if string(log) != want {
		t.Fatalf("log %q, want %q", log, want)
	}
}

func TestLaunchFailureIsACrash(t *testing.T) {
	d := newDriver(t, time.Second)
	id, err := d.Start(context.Background(), serving.ReplicaSpec{Deployment: "m", Template: serving.Template{Command: []string{"/nonexistent/model-server"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := waitExited(t, d, id)
	if !r.Failed || !strings.Contains(r.Reason, "nonexistent") {
		t.Fatalf("%+v", r)
	}
	if err := d.Forget(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if rs, _ := d.Replicas(context.Background(), "m"); len(rs) != 0 {
		t.Fatalf("forgotten replica listed: %+v", rs)
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	d := newDriver(t, 200*time.Millisecond)
	id, err := d.Start(context.Background(), serving.ReplicaSpec{Deployment: "m", Template: serving.Template{
		Command: []string{"sh", "-c", `trap "" TERM; sleep 30 & wait; sleep 30`},
	}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the shell set its trap
	if err := d.Forget(context.Background(), id); err == nil {
		t.Fatal("forgot a running replica")
	}
	start := time.Now()
	if err := d.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	r := waitExited(t, d, id)
	if r.Failed {
		t.Fatalf("a stopped replica counted as crashed: %+v", r)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("exited after %v, before the grace period, though it ignores SIGTERM", el)
	}
}

func TestKillIsACrash(t *testing.T) {
	d := newDriver(t, time.Second)
	id, _ := d.Start(context.Background(), serving.ReplicaSpec{Deployment: "m", Template: serving.Template{Command: []string{"sleep", "30"}}})
	if err := d.Kill(id); err != nil {
		t.Fatal(err)
	}
	if r := waitExited(t, d, id); !r.Failed {
		t.Fatalf("%+v", r)
	}
}
