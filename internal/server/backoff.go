package server

import "time"

// Restart backoff: a gang whose ranks keep failing (a bad node, a bug at
// startup) restarts after 1 s, then 2 s, 4 s ... up to a minute, so a crash
// loop neither floods the agents, the logs and the events nor hides the
// first failure's output behind a hundred others. The gang keeps its GPUs
// meanwhile.
const (
	restartBackoffBase = time.Second
	restartBackoffMax  = time.Minute
)

// restartBackoff is the delay before restart n (1, 2, ...).
func restartBackoff(n int) time.Duration {
	d := restartBackoffBase
	for i := 1; i < n && d < restartBackoffMax; i++ {
		d *= 2
	}
	return min(d, restartBackoffMax)
}
