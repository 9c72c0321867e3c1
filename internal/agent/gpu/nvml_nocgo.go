//go:build !cgo

package gpu

import "log/slog"

// OpenDefault reports that this binary was built without cgo, which NVML
// needs.
func OpenDefault(*slog.Logger) (Source, error) {
	return nil, &noGPUError{"this binary was built without cgo (CGO_ENABLED=0), which NVML needs"}
}
