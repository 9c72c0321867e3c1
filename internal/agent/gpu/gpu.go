// Package gpu discovers the GPUs of a node and watches their health. Real
// devices come from NVML (github.com/NVIDIA/go-nvml) behind the Source
// interface; emulated devices (--fake-gpus) let a machine without a GPU act
// as a GPU node, marked as such wherever they appear.
package gpu

import (
	"errors"
	"fmt"
	"strings"
)

// Device is one GPU as the agent reports it.
type Device struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid"`
	Model     string `json:"model"`
	MemoryMiB uint64 `json:"memoryMiB"`
	PCIBusID  string `json:"pciBusId,omitempty"`
	// NVLinks counts the NVLink links that are up; NVLinksDown those the
	// GPU has but that are down.
	NVLinks     int `json:"nvlinks,omitempty"`
	NVLinksDown int `json:"nvlinksDown,omitempty"`
	// ECC counters since the driver loaded (volatile). ECCSupported is
	// false on GPUs with ECC off or without it.
	ECCSupported   bool   `json:"eccSupported,omitempty"`
	ECCCorrected   uint64 `json:"eccCorrected,omitempty"`
	ECCUncorrected uint64 `json:"eccUncorrected,omitempty"`
	// RemapPending says the GPU needs a reset to remap a row; RemapFailed
	// that remapping failed (the GPU should be replaced).
	RemapPending bool `json:"remapPending,omitempty"`
	RemapFailed  bool `json:"remapFailed,omitempty"`
	// XIDs are the critical Xid errors seen since the agent started, newest
	// last (at most maxXIDs).
	XIDs []XID `json:"xids,omitempty"`
	// Errors are NVML calls that failed while reading this device.
	Errors   []string `json:"errors,omitempty"`
	Emulated bool     `json:"emulated,omitempty"`
}

// XID is one Xid error reported by the driver.
type XID struct {
	Code uint64 `json:"code"`
}

// maxXIDs bounds the Xids kept per device.
const maxXIDs = 16

// Inventory is a snapshot of a node's GPUs.
type Inventory struct {
	// Source says where the devices come from: "nvml" or "emulated".
	Source        string   `json:"source"`
	DriverVersion string   `json:"driverVersion,omitempty"`
	CUDAVersion   string   `json:"cudaVersion,omitempty"`
	Devices       []Device `json:"devices"`
}

// Emulated reports whether the devices are emulated.
func (inv Inventory) Emulated() bool { return inv.Source == SourceEmulated }

// Model is the model of the first device ("" without devices).
func (inv Inventory) Model() string {
	if len(inv.Devices) == 0 {
		return ""
	}
	return inv.Devices[0].Model
}

// Sources of an inventory.
const (
	SourceNVML     = "nvml"
	SourceEmulated = "emulated"
)

// Source yields the node's GPUs. Implementations are safe for concurrent use.
type Source interface {
	// Inventory reads every device now.
	Inventory() (Inventory, error)
	// Close releases the library.
	Close() error
}

// ErrNoGPU says that the node has no usable GPU: no NVML library, no driver,
// or no device.
var ErrNoGPU = errors.New("no GPU found")

// noGPUError wraps ErrNoGPU with the cause.
type noGPUError struct{ cause string }

func (e *noGPUError) Error() string {
	return "no GPU found: " + e.cause + " (on a machine without a GPU, declare emulated devices with --fake-gpus N --gpu-model MODEL)"
}
func (e *noGPUError) Is(target error) bool { return target == ErrNoGPU }

// Emulated is a Source of emulated devices.
type Emulated struct {
	inv Inventory
}

// NewEmulated declares n emulated GPUs of the given model, e.g.
// "H100-80GB": the memory is read from the model name's "-<N>GB" suffix.
// node seeds stable UUIDs, so that an agent restart reports the same
// devices.
func NewEmulated(n int, model, node string) (*Emulated, error) {
	if n <= 0 {
		return nil, fmt.Errorf("--fake-gpus: want a positive count, got %d", n)
	}
	if n > 64 {
		return nil, fmt.Errorf("--fake-gpus: %d GPUs on one node is more than the 64 the launcher can address", n)
	}
	model = strings.TrimSpace(model)
	if model == "" {
		return nil, errors.New("--gpu-model: required with --fake-gpus (for example H100-80GB)")
	}
	mem, err := memoryFromModel(model)
	if err != nil {
		return nil, err
	}
	inv := Inventory{Source: SourceEmulated}
	for i := range n {
		inv.Devices = append(inv.Devices, Device{
			Index:     i,
			UUID:      emulatedUUID(node, i),
			Model:     model,
			MemoryMiB: mem,
			PCIBusID:  fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			Emulated:  true,
		})
	}
	return &Emulated{inv: inv}, nil
}

// Inventory returns the emulated devices.
func (e *Emulated) Inventory() (Inventory, error) {
	out := e.inv
	out.Devices = append([]Device(nil), e.inv.Devices...)
	return out, nil
}

// Close does nothing.
func (e *Emulated) Close() error { return nil }

// memoryFromModel reads "80GB" from "H100-80GB" (MiB). A model without a
// size gets 0: unknown.
func memoryFromModel(model string) (uint64, error) {
	i := strings.LastIndexAny(model, "- _")
	tail := strings.ToUpper(model[i+1:])
	if !strings.HasSuffix(tail, "GB") {
		return 0, nil
	}
	var gb uint64
	if _, err := fmt.Sscanf(strings.TrimSuffix(tail, "GB"), "%d", &gb); err != nil || gb == 0 {
		return 0, fmt.Errorf("--gpu-model %q: cannot read the memory size from %q (want e.g. H100-80GB)", model, tail)
	}
	return gb * 1024, nil
}

// emulatedUUID is a stable, obviously fake UUID: FNV-1a of the node name
// and index, in the GPU-xxxxxxxx-... layout NVML uses.
func emulatedUUID(node string, i int) string {
	h := uint64(14695981039346656037)
	for _, b := range []byte(fmt.Sprintf("%s/%d", node, i)) {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return fmt.Sprintf("GPU-emu%05x-%04x-%04x-%04x-%012x", h>>44&0xfffff, h>>28&0xffff, h>>12&0xffff, uint64(i)&0xffff, h&0xffffffffffff)
}
