// Package ib reads a node's InfiniBand HCAs from sysfs
// (/sys/class/infiniband), as ibstat does, without libibverbs.
package ib

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultRoot is where the kernel lists RDMA devices.
const DefaultRoot = "/sys/class/infiniband"

// HCA is one RDMA device (mlx5_0 ...).
type HCA struct {
	Name      string `json:"name"`
	NodeGUID  string `json:"nodeGuid,omitempty"`
	FWVersion string `json:"fwVersion,omitempty"`
	BoardID   string `json:"boardId,omitempty"`
	PCIBusID  string `json:"pciBusId,omitempty"`
	Ports     []Port `json:"ports"`
}

// Port is one port of an HCA.
type Port struct {
	Num       int     `json:"num"`
	State     string  `json:"state"`     // ACTIVE, DOWN, INIT, ARMED
	PhysState string  `json:"physState"` // LinkUp, Disabled, Polling ...
	RateGbps  float64 `json:"rateGbps"`
	Rate      string  `json:"rate,omitempty"`      // as the kernel says: "400 Gb/sec (4X NDR)"
	LinkLayer string  `json:"linkLayer,omitempty"` // InfiniBand or Ethernet (RoCE)
	LID       string  `json:"lid,omitempty"`
}

// Active reports whether the port carries traffic.
func (p Port) Active() bool { return p.State == "ACTIVE" }

// IsInfiniBand reports whether the HCA has an InfiniBand port (rather than
// only RoCE/Ethernet ports, such as Azure's accelerated-networking NIC).
func (h HCA) IsInfiniBand() bool {
	for _, p := range h.Ports {
		if p.LinkLayer == "" || p.LinkLayer == "InfiniBand" {
			return true
		}
	}
	return false
}

// Discover lists the HCAs under root (DefaultRoot on a real node; a fake
// tree in tests). A missing root means no HCA, not an error.
func Discover(root string) ([]HCA, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("infiniband: %w", err)
	}
	var out []HCA
	for _, e := range entries {
		h, err := readHCA(filepath.Join(root, e.Name()))
		if err != nil {
			return nil, err
		}
		h.Name = e.Name()
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b HCA) int { return naturalCompare(a.Name, b.Name) })
	return out, nil
}

func readHCA(dir string) (HCA, error) {
	h := HCA{
		NodeGUID:  readTrim(dir, "node_guid"),
		FWVersion: readTrim(dir, "fw_ver"),
		BoardID:   readTrim(dir, "board_id"),
	}
	if dev, err := filepath.EvalSymlinks(filepath.Join(dir, "device")); err == nil {
		h.PCIBusID = filepath.Base(dev)
	}
	ports, err := os.ReadDir(filepath.Join(dir, "ports"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return h, fmt.Errorf("infiniband: %w", err)
	}
	for _, pe := range ports {
		n, err := strconv.Atoi(pe.Name())
		if err != nil {
			continue
		}
		pd := filepath.Join(dir, "ports", pe.Name())
		p := Port{
			Num:       n,
			State:     afterColon(readTrim(pd, "state")),
			PhysState: afterColon(readTrim(pd, "phys_state")),
			Rate:      readTrim(pd, "rate"),
			LinkLayer: readTrim(pd, "link_layer"),
			LID:       readTrim(pd, "lid"),
		}
		p.RateGbps = parseRate(p.Rate)
		h.Ports = append(h.Ports, p)
	}
	slices.SortFunc(h.Ports, func(a, b Port) int { return a.Num - b.Num })
	return h, nil
}

func readTrim(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// afterColon turns the kernel's "4: ACTIVE" into "ACTIVE".
func afterColon(s string) string {
	if _, v, ok := strings.Cut(s, ":"); ok {
		return strings.TrimSpace(v)
	}
	return s
}

// parseRate reads "400 Gb/sec (4X NDR)" as 400.
func parseRate(s string) float64 {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return v
}

// Rails returns the InfiniBand HCAs with an active port: the compute rails
// NCCL should use.
func Rails(hcas []HCA) []string {
	var out []string
	for _, h := range hcas {
		if !h.IsInfiniBand() {
			continue
		}
		for _, p := range h.Ports {
			if p.Active() {
				out = append(out, h.Name)
				break
			}
		}
	}
	return out
}

// NCCLIBHCA is the NCCL_IB_HCA value selecting exactly these HCAs: the
// leading "=" makes NCCL match names exactly, so mlx5_1 does not also pick
// mlx5_10 ... mlx5_17.
func NCCLIBHCA(rails []string) string {
	if len(rails) == 0 {
		return ""
	}
	return "=" + strings.Join(rails, ",")
}

// naturalCompare orders mlx5_2 before mlx5_10.
func naturalCompare(a, b string) int {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb || na < 0 || nb < 0 {
		return strings.Compare(a, b)
	}
	return na - nb
}

func splitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) {
		return s, -1
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return s, -1
	}
	return s[:i], n
}
