// Package local is a serving.Driver that runs replicas as processes on
// this machine: for tests, and for one-machine setups without agents. Each
// replica gets a free port in PORT (and "$PORT" in its arguments), its own
// process group, and a log file.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gpucloud/internal/serving"
)

// Config configures a Driver.
type Config struct {
	// Dir holds the replicas' logs (<id>.log); required.
	Dir string
	// Host is the address replicas listen on (default 127.0.0.1).
	Host string
	// Grace is the time between SIGTERM and SIGKILL on Stop (default 10s).
	Grace time.Duration
	// Env is the base environment of replicas (default os.Environ()).
	Env    []string
	Logger *slog.Logger
}

// Driver runs replicas as local processes.
type Driver struct {
	cfg Config

	mu   sync.Mutex
	reps map[string]*proc
	seq  int
}

type proc struct {
	r       serving.Replica
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
}

// New makes a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local driver: Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("local driver: %w", err)
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Driver{cfg: cfg, reps: map[string]*proc{}}, nil
}

// freePort asks the kernel for a free port. Another process may take it
// before the replica binds; the replica then exits and is replaced.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start launches a replica. A replica that cannot be launched is reported
// as crashed, so the controller backs off as for any crash.
func (d *Driver) Start(ctx context.Context, spec serving.ReplicaSpec) (string, error) {
	d.mu.Lock()
	d.seq++
	id := fmt.Sprintf("%s-%d", spec.Deployment, d.seq)
	d.mu.Unlock()
	p := &proc{r: serving.Replica{ID: id, Deployment: spec.Deployment, Revision: spec.Revision, Phase: serving.Running}, done: make(chan struct{})}
	if err := d.launch(p, spec); err != nil {
		p.r.Phase, p.r.Failed, p.r.ExitCode, p.r.Reason = serving.Exited, true, -1, err.Error()
		close(p.done)
		d.cfg.Logger.Warn("replica failed to launch", "replica", id, "error", err)
	}
	d.mu.Lock()
	d.reps[id] = p
	d.mu.Unlock()
	return id, nil
}

func (d *Driver) launch(p *proc, spec serving.ReplicaSpec) error {
	port, err := freePort(d.cfg.Host)
	if err != nil {
		return err
	}
	env := map[string]string{}
	for k, v := range spec.Template.Env {
		env[k] = v
	}
	env["PORT"] = strconv.Itoa(port)
	env["GPUCLOUD_DEPLOYMENT"] = spec.Deployment
	env["GPUCLOUD_REPLICA"] = p.r.ID
	env["GPUCLOUD_REVISION"] = spec.Revision
	args := serving.ExpandArgs(spec.Template.Command, env)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = spec.Template.WorkingDir
	cmd.Env = slices.Clone(d.cfg.Env)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log, err := os.OpenFile(filepath.Join(d.cfg.Dir, p.r.ID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	p.cmd = cmd
	p.r.Addr = net.JoinHostPort(d.cfg.Host, strconv.Itoa(port))
	go func() {
		err := cmd.Wait()
		log.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		p.r.Phase = serving.Exited
		p.r.ExitCode = cmd.ProcessState.ExitCode()
		p.r.Failed = !p.stopped
		if err != nil {
			p.r.Reason = err.Error()
		}
		close(p.done)
	}()
	return nil
}

// Stop sends SIGTERM to the replica's process group, and SIGKILL after the
// grace period.
func (d *Driver) Stop(ctx context.Context, id string) error {
	d.mu.Lock()
	p, ok := d.reps[id]
	if !ok {
		d.mu.Unlock()
		return fmt.Errorf("no replica %s", id)
	}
	already := p.stopped
	p.stopped = true
	d.mu.Unlock()
	if already || p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	go func() {
		select {
		case <-p.done:
		case <-time.After(d.cfg.Grace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	return nil
}

// Kill ends a replica with SIGKILL, as a crash would (it is reported as
// failed). For tests and fault drills.
func (d *Driver) Kill(id string) error {
	d.mu.Lock()
	p, ok := d.reps[id]
	d.mu.Unlock()
	if !ok || p.cmd == nil {
		return fmt.Errorf("no running replica %s", id)
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// Forget drops an exited replica.
func (d *Driver) Forget(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.reps[id]
	if !ok {
		return nil
	}
	if p.r.Phase != serving.Exited {
		return fmt.Errorf("replica %s is still running", id)
	}
	delete(d.reps, id)
	return nil
}

// Replicas lists a deployment's replicas by ID.
func (d *Driver) Replicas(ctx context.Context, deployment string) ([]serving.Replica, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []serving.Replica
	for _, p := range d.reps {
		if p.r.Deployment == deployment {
			out = append(out, p.r)
		}
	}
	slices.SortFunc(out, func(a, b serving.Replica) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Close kills every replica and waits for them.
func (d *Driver) Close() {
	d.mu.Lock()
	ps := make([]*proc, 0, len(d.reps))
	for _, p := range d.reps {
		ps = append(ps, p)
	}
	d.mu.Unlock()
	for _, p := range ps {
		if p.cmd != nil {
			d.mu.Lock()
			p.stopped = true
			d.mu.Unlock()
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, p := range ps {
		<-p.done
	}
}

var _ serving.Driver = (*Driver)(nil)
