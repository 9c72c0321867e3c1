//go:build unix

package schedbench

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used (all threads, GC included),
// which, unlike wall time, does not grow while other processes hold the
// cores.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
