package launch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procIdentity is what tells a process apart from a later one that reuses
// its pid: the kernel's start time (clock ticks since boot) and the boot.
type procIdentity struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"startTicks"`
}

// startTicks reads field 22 of /proc/PID/stat.
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// identify records a live process.
func identify(pid int) (procIdentity, error) {
	t, err := startTicks(pid)
	if err != nil {
		return procIdentity{}, err
	}
	return procIdentity{PID: pid, StartTicks: t}, nil
}

// alive reports whether the recorded process still runs (a zombie counts
// as ended).
func (p procIdentity) alive() bool {
	if p.PID <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && t == p.StartTicks
}

// bootID identifies this boot of the kernel: after a reboot no recorded
// process can be alive.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitExit blocks until the process (not necessarily a child) ends or stop
// closes. It polls a pidfd when the kernel has them (Linux 5.3), /proc
// otherwise.
func waitExit(p procIdentity, stop <-chan struct{}) bool {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err == nil {
		defer unix.Close(fd)
		if !p.alive() { // the pid may have been reused before the open
			return true
		}
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 200)
			if err != nil && !errors.Is(err, syscall.EINTR) {
				break // fall back to /proc
			}
			if n > 0 {
				return true
			}
			select {
			case <-stop:
				return false
			default:
			}
			// A zombie child keeps its pidfd unreadable to nobody; the
			// /proc check covers it.
			if !p.alive() {
				return true
			}
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for p.alive() {
		select {
		case <-stop:
			return false
		case <-t.C:
		}
	}
	return true
}

// signalGroup sends sig to the process group led by pid. ESRCH (the group
// is gone) is not an error.
func signalGroup(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return nil
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// groupAlive reports whether any process is left in the group led by pid.
func groupAlive(pid int) bool {
	return pid > 0 && syscall.Kill(-pid, 0) == nil
}
