package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Script is the operator's health check: an executable that exits 0 on a
// healthy node. On failure its last line mentioning ERROR (the convention of
// LBNL NHC and Azure's aznhc), or else its last line, is the reason.
type Script struct {
	Path    string
	Timeout time.Duration // default one minute
}

// Validate checks that the script exists and is executable, so that a typo
// fails the agent at start rather than cordoning the node later.
func (s Script) Validate() error {
	fi, err := os.Stat(s.Path)
	if err != nil {
		return fmt.Errorf("--health-script: %w", err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("--health-script %s: not an executable file", s.Path)
	}
	return nil
}

// maxReason bounds the reason taken from the script's output.
const maxReason = 300

// Run runs the script once; nil means healthy.
func (s Script) Run(ctx context.Context) *Problem {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that a timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return &Problem{Check: "script", Message: fmt.Sprintf("%s timed out after %v", s.Path, timeout), GPU: -1}
	}
	msg := reasonLine(out.String())
	var ee *exec.ExitError
	if msg == "" && errors.As(err, &ee) {
		msg = fmt.Sprintf("%s: %v", s.Path, ee)
	} else if msg == "" {
		msg = fmt.Sprintf("%s: %v", s.Path, err)
	}
	return &Problem{Check: "script", Message: msg, GPU: -1}
}

// reasonLine picks the last line that mentions ERROR, else the last
// non-empty line.
func reasonLine(out string) string {
	lines := strings.Split(out, "\n")
	last := ""
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.Join(strings.Fields(lines[i]), " ")
		if l == "" {
			continue
		}
		if last == "" {
			last = l
		}
		if strings.Contains(strings.ToUpper(l), "ERROR") {
			last = l
			break
		}
	}
	if len(last) > maxReason {
		last = last[:maxReason] + "..."
	}
	return last
}
