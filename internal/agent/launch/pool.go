package launch

import (
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// A shim is a Go program: its runtime and package initialisation take
// ~10 ms of CPU before it can start a rank, which would sit on the launch
// path of every rank (eight of them compete for the CPUs of a node at
// once). The pool keeps shims started ahead of need, idle on their spec
// pipe: launching a rank is then a pipe write and one fork/exec.

// idleShim is a started shim waiting for its spec.
type idleShim struct {
	cmd  *exec.Cmd
	spec *os.File // write end of its spec pipe
}

// hand gives the shim its rank.
func (s *idleShim) hand(spec []byte) error {
	_, err := s.spec.Write(spec)
	if cerr := s.spec.Close(); err == nil {
		err = cerr
	}
	return err
}

// spawnShim starts a shim in a process group of its own.
func (l *Launcher) spawnShim() (*idleShim, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(l.cfg.Shim[0], append(slices.Clone(l.cfg.Shim[1:]), "--spec-fd", "3")...)
	cmd.ExtraFiles = []*os.File{r}
	cmd.Dir = l.cfg.DataDir
	cmd.Env = append(withoutShimEnv(l.cfg.BaseEnv), ShimEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	return &idleShim{cmd: cmd, spec: w}, nil
}

// pool keeps up to want idle shims. It fills once the node has run a gang
// (a node that never runs one keeps no idle processes: gpucloud up runs
// many simulated nodes in one process), and lets its shims go after
// idleTimeout without a launch.
type pool struct {
	l       *Launcher
	want    int
	mu      sync.Mutex
	idle    []*idleShim
	filling bool
	closed  bool
	full    *sync.Cond
	expiry  *time.Timer
}

// idleTimeout releases the idle shims of a node that stopped launching.
const idleTimeout = 10 * time.Minute

func newPool(l *Launcher, want int) *pool {
	p := &pool{l: l, want: want}
	p.full = sync.NewCond(&p.mu)
	return p
}

// take returns the oldest idle shim (the one surely done starting), or
// nil. The gang refills the pool once all its ranks have started, so that
// new shims do not compete with them for the CPUs.
func (p *pool) take() *idleShim {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	s := p.idle[0]
	p.idle = p.idle[1:]
	return s
}

// refill starts shims in the background until the pool is full.
func (p *pool) refill() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.expiry == nil {
		p.expiry = time.AfterFunc(idleTimeout, p.release)
	} else {
		p.expiry.Reset(idleTimeout)
	}
	if p.filling || p.closed || len(p.idle) >= p.want {
		p.mu.Unlock()
		return
	}
	p.filling = true
	p.mu.Unlock()
	go func() {
		for {
			p.mu.Lock()
			if p.closed || len(p.idle) >= p.want {
				p.filling = false
				p.full.Broadcast()
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			s, err := p.l.spawnShim()
			p.mu.Lock()
			switch {
			case err != nil:
				p.l.cfg.Log.Warn("starting an idle shim", "err", err)
				p.filling = false
				p.full.Broadcast()
				p.mu.Unlock()
				return
			case p.closed:
				p.mu.Unlock()
				s.close()
				return
			}
			p.idle = append(p.idle, s)
			p.mu.Unlock()
		}
	}()
}

// waitFull blocks until the pool holds its idle shims (benchmarks).
func (p *pool) waitFull() {
	if p == nil {
		return
	}
	p.mu.Lock()
	for len(p.idle) < p.want && !p.closed && p.filling {
		p.full.Wait()
	}
	p.mu.Unlock()
}

// release lets the idle shims go (the node has not launched for a while);
// the next gang fills the pool again.
func (p *pool) release() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, s := range idle {
		s.close()
	}
}

// close lets the idle shims go for good: their pipes close, they exit.
func (p *pool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.full.Broadcast()
	p.mu.Unlock()
	p.release()
}

func (s *idleShim) close() {
	s.spec.Close()
	go s.cmd.Wait()
}
