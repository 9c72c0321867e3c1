//go:build !unix

package schedbench

import "time"

func cpuTime() time.Duration { return 0 }
