//go:build cgo

package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is a Source backed by the NVIDIA Management Library. It holds an
// initialised library: go-nvml kills the process (a symbol lookup error,
// not a panic) when any call but Init runs without a loaded library, so
// OpenNVML checks Init before anything else and nothing here runs without
// it.
type NVML struct {
	lib nvml.Interface
	log *slog.Logger

	mu   sync.Mutex
	xids map[string][]XID // by UUID

	stop chan struct{}
	done chan struct{}
}

// OpenDefault opens the system's NVML (libnvidia-ml.so.1).
func OpenDefault(log *slog.Logger) (Source, error) {
	s, err := OpenNVML(nvml.New(), log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OpenNVML initialises lib and starts watching Xid events. Without the
// library or the driver, or without a device, it returns an error that
// matches ErrNoGPU.
func OpenNVML(lib nvml.Interface, log *slog.Logger) (*NVML, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		switch ret {
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			return nil, &noGPUError{"the NVML library (libnvidia-ml.so.1) is not installed"}
		case nvml.ERROR_DRIVER_NOT_LOADED:
			return nil, &noGPUError{"the NVIDIA driver is not loaded"}
		default:
			return nil, &noGPUError{"NVML init: " + ret.Error()}
		}
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML DeviceGetCount: %w", ret)
	}
	if n == 0 {
		lib.Shutdown()
		return nil, &noGPUError{"NVML sees no device"}
	}
	s := &NVML{lib: lib, log: log, xids: map[string][]XID{}, stop: make(chan struct{}), done: make(chan struct{})}
	if es, err := s.registerXIDs(n); err != nil {
		// Not fatal: the other checks still run.
		log.Warn("NVML: Xid events unavailable; Xid health check off", "err", err)
		close(s.done)
	} else {
		go s.watchXIDs(es)
	}
	return s, nil
}

// Inventory reads every device.
func (s *NVML) Inventory() (Inventory, error) {
	inv := Inventory{Source: SourceNVML}
	if v, ret := s.lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		inv.DriverVersion = v
	}
	if v, ret := s.lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		inv.CUDAVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	n, ret := s.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return inv, fmt.Errorf("NVML DeviceGetCount: %w", ret)
	}
	for i := range n {
		inv.Devices = append(inv.Devices, s.device(i))
	}
	return inv, nil
}

// device reads one device; failed calls land in Device.Errors.
func (s *NVML) device(i int) Device {
	d := Device{Index: i}
	fail := func(call string, ret nvml.Return) {
		d.Errors = append(d.Errors, call+": "+ret.Error())
	}
	h, ret := s.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		fail("DeviceGetHandleByIndex", ret)
		return d
	}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		fail("GetUUID", ret)
	}
	if d.Model, ret = h.GetName(); ret != nvml.SUCCESS {
		fail("GetName", ret)
	}
	if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryMiB = mem.Total >> 20
	} else {
		fail("GetMemoryInfo", ret)
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.PCIBusID = cString(pci.BusId[:])
		if d.PCIBusID == "" && pci.Bus != 0 {
			d.PCIBusID = fmt.Sprintf("%08X:%02X:%02X.0", pci.Domain, pci.Bus, pci.Device)
		}
	} else {
		fail("GetPciInfo", ret)
	}
	for l := range nvml.NVLINK_MAX_LINKS {
		st, ret := h.GetNvLinkState(l)
		if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT {
			break // no such link: the GPU has l links
		}
		if ret != nvml.SUCCESS {
			fail(fmt.Sprintf("GetNvLinkState(%d)", l), ret)
			break
		}
		if st == nvml.FEATURE_ENABLED {
			d.NVLinks++
		} else {
			d.NVLinksDown++
		}
	}
	if c, ret := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
		d.ECCSupported = true
		d.ECCUncorrected = c
		if c, ret := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
			d.ECCCorrected = c
		}
	} else if ret != nvml.ERROR_NOT_SUPPORTED {
		fail("GetTotalEccErrors", ret)
	}
	if _, _, pending, failed, ret := h.GetRemappedRows(); ret == nvml.SUCCESS {
		d.RemapPending, d.RemapFailed = pending, failed
	} else if ret != nvml.ERROR_NOT_SUPPORTED {
		fail("GetRemappedRows", ret)
	}
	s.mu.Lock()
	d.XIDs = append([]XID(nil), s.xids[d.UUID]...)
	s.mu.Unlock()
	return d
}

// registerXIDs subscribes every device to critical Xid events.
func (s *NVML) registerXIDs(n int) (nvml.EventSet, error) {
	es, ret := s.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("EventSetCreate: %w", ret)
	}
	registered := 0
	for i := range n {
		h, ret := s.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		types, ret := h.GetSupportedEventTypes()
		if ret != nvml.SUCCESS || types&nvml.EventTypeXidCriticalError == 0 {
			continue
		}
		if ret := h.RegisterEvents(nvml.EventTypeXidCriticalError, es); ret == nvml.SUCCESS {
			registered++
		}
	}
	if registered == 0 {
		es.Free()
		return nil, errors.New("no device supports Xid events")
	}
	return es, nil
}

// xidWaitMillis bounds how long Close waits for the watcher.
const xidWaitMillis = 500

func (s *NVML) watchXIDs(es nvml.EventSet) {
	defer close(s.done)
	defer es.Free()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		e, ret := es.Wait(xidWaitMillis)
		if ret == nvml.ERROR_TIMEOUT {
			continue
		}
		if ret != nvml.SUCCESS {
			s.log.Warn("NVML: Xid event wait failed; Xid health check off", "err", ret.Error())
			return
		}
		if e.EventType != nvml.EventTypeXidCriticalError || e.Device == nil {
			continue
		}
		uuid, ret := e.Device.GetUUID()
		if ret != nvml.SUCCESS {
			continue
		}
		s.log.Warn("NVML: Xid error", "gpu", uuid, "xid", e.EventData)
		s.mu.Lock()
		x := append(s.xids[uuid], XID{Code: e.EventData})
		if len(x) > maxXIDs {
			x = x[len(x)-maxXIDs:]
		}
		s.xids[uuid] = x
		s.mu.Unlock()
	}
}

// Close stops the Xid watcher and shuts NVML down.
func (s *NVML) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %w", ret)
	}
	return nil
}

// cString reads a NUL-terminated C char array.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
