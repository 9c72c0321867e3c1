//go:build cgo

package gpu

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// h100 is go-nvml's DGX H100 mock with the calls the agent makes and the
// mock leaves unset: 18 NVLinks up, ECC on and clean, no remapping, Xid
// events delivered from the xids channel.
type h100 struct {
	*server.Server
	xids chan nvml.EventData
	dev  []*server.Device
}

func newH100(t *testing.T) *h100 {
	t.Helper()
	m := &h100{Server: dgxh100.New(), xids: make(chan nvml.EventData, 8)}
	for _, d := range m.Devices {
		sd := d.(*server.Device)
		m.dev = append(m.dev, sd)
		sd.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link >= 18 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		sd.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
			return 0, nvml.SUCCESS
		}
		sd.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
		sd.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
		}
		sd.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	}
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
				select {
				case e := <-m.xids:
					return e, nvml.SUCCESS
				case <-time.After(time.Duration(ms) * time.Millisecond):
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	return m
}

func openH100(t *testing.T, m *h100) *NVML {
	t.Helper()
	s, err := OpenNVML(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestNVMLInventoryDGXH100(t *testing.T) {
	m := newH100(t)
	m.dev[2].GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for i, c := range "00000000:1B:00.0" {
			p.BusId[i] = int8(c)
		}
		return p, nvml.SUCCESS
	}
	inv, err := openH100(t, m).Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if inv.Source != SourceNVML || inv.Emulated() {
		t.Errorf("source %q, want nvml and not emulated", inv.Source)
	}
	if inv.DriverVersion != "550.54.15" || inv.CUDAVersion != "12.4" {
		t.Errorf("driver %q cuda %q, want 550.54.15 and 12.4", inv.DriverVersion, inv.CUDAVersion)
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("%d devices, want 8", len(inv.Devices))
	}
	for i, d := range inv.Devices {
		if d.Index != i || d.UUID != m.dev[i].UUID || d.Model != "NVIDIA H100 80GB HBM3" || d.MemoryMiB != 81920 {
			t.Errorf("device %d = %+v", i, d)
		}
		if d.NVLinks != 18 || d.NVLinksDown != 0 || !d.ECCSupported || d.Emulated || len(d.Errors) != 0 {
			t.Errorf("device %d: nvlinks %d/%d ecc %v emulated %v errors %v", i, d.NVLinks, d.NVLinksDown, d.ECCSupported, d.Emulated, d.Errors)
		}
	}
	if got := inv.Devices[2].PCIBusID; got != "00000000:1B:00.0" {
		t.Errorf("PCI bus id %q, want 00000000:1B:00.0", got)
	}
}

func TestNVMLInitFailureCallsNothingElse(t *testing.T) {
	for _, tc := range []struct {
		ret  nvml.Return
		want string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "driver is not loaded"},
		{nvml.ERROR_NO_PERMISSION, "NVML init"},
	} {
		m := newH100(t)
		m.InitFunc = func() nvml.Return { return tc.ret }
		// With a real library any call after a failed Init kills the
		// process; here it fails the test.
		m.DeviceGetCountFunc = func() (int, nvml.Return) {
			t.Fatal("DeviceGetCount called after a failed Init")
			return 0, nvml.SUCCESS
		}
		_, err := OpenNVML(m, nil)
		if !errors.Is(err, ErrNoGPU) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--fake-gpus") {
			t.Errorf("Init %v: error %v, want ErrNoGPU naming %q and --fake-gpus", tc.ret, err, tc.want)
		}
	}
}

func TestNVMLNoDevice(t *testing.T) {
	m := newH100(t)
	shut := false
	m.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	m.ShutdownFunc = func() nvml.Return { shut = true; return nvml.SUCCESS }
	if _, err := OpenNVML(m, nil); !errors.Is(err, ErrNoGPU) {
		t.Errorf("error %v, want ErrNoGPU", err)
	}
	if !shut {
		t.Error("NVML not shut down after finding no device")
	}
}

func TestNVMLDeviceFaults(t *testing.T) {
	m := newH100(t)
	m.dev[1].GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	m.dev[3].GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
		if typ == nvml.MEMORY_ERROR_TYPE_UNCORRECTED {
			return 2, nvml.SUCCESS
		}
		return 40, nvml.SUCCESS
	}
	m.dev[4].GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
		switch {
		case link >= 18:
			return 0, nvml.ERROR_INVALID_ARGUMENT
		case link == 7 || link == 9:
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		}
		return nvml.FEATURE_ENABLED, nvml.SUCCESS
	}
	m.dev[5].GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 1, true, false, nvml.SUCCESS }
	m.dev[6].GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	inv, err := openH100(t, m).Inventory()
	if err != nil {
		t.Fatal(err)
	}
	d := inv.Devices
	if len(d[1].Errors) != 1 || !strings.Contains(d[1].Errors[0], "GetMemoryInfo") {
		t.Errorf("device 1 errors %v, want the GetMemoryInfo failure", d[1].Errors)
	}
	if d[3].ECCUncorrected != 2 || d[3].ECCCorrected != 40 {
		t.Errorf("device 3 ECC %d/%d, want 2 uncorrected, 40 corrected", d[3].ECCUncorrected, d[3].ECCCorrected)
	}
	if d[4].NVLinks != 16 || d[4].NVLinksDown != 2 {
		t.Errorf("device 4 NVLinks %d up %d down, want 16 and 2", d[4].NVLinks, d[4].NVLinksDown)
	}
	if !d[5].RemapPending || d[5].RemapFailed {
		t.Errorf("device 5 remap pending %v failed %v", d[5].RemapPending, d[5].RemapFailed)
	}
	if d[6].ECCSupported || len(d[6].Errors) != 0 {
		t.Errorf("device 6: ECC off must read as unsupported without error, got %v %v", d[6].ECCSupported, d[6].Errors)
	}
}

func TestNVMLXIDEvents(t *testing.T) {
	m := newH100(t)
	s := openH100(t, m)
	m.xids <- nvml.EventData{Device: m.dev[3], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	deadline := time.Now().Add(5 * time.Second)
	for {
		inv, err := s.Inventory()
		if err != nil {
			t.Fatal(err)
		}
		if x := inv.Devices[3].XIDs; len(x) == 1 && x[0].Code == 79 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Xid 79 on device 3 not reported: %+v", inv.Devices[3].XIDs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNVMLWithoutXIDEvents(t *testing.T) {
	m := newH100(t)
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	inv, err := openH100(t, m).Inventory()
	if err != nil || len(inv.Devices) != 8 {
		t.Fatalf("without Xid events: %d devices, %v", len(inv.Devices), err)
	}
}
