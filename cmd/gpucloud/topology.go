package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"gpucloud/internal/topology"
)

func newTopologyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "Load, check, generate and summarise fabric descriptions",
	}
	cmd.AddCommand(newTopologyValidateCmd(), newTopologyShowCmd(), newTopologyGenCmd())
	return cmd
}

// fabricInput is how to read a fabric file: its format, and for formats
// that name no GPUs, the hardware of its nodes.
type fabricInput struct {
	format, nodeClass string
}

// flags registers --format (named formatName) and --node-class.
func (in *fabricInput) flags(cmd *cobra.Command, formatName string) {
	names := make([]string, len(topology.Formats))
	for i, f := range topology.Formats {
		names[i] = string(f)
	}
	cmd.Flags().StringVar(&in.format, formatName, "auto", "input format: "+strings.Join(names, "|"))
	cmd.Flags().StringVar(&in.nodeClass, "node-class", "", "the nodes' hardware, for formats that name no GPUs (slurm, slurm-yaml, ibnetdiscover: default 8 GPUs of model unknown): the node of a preset, "+strings.Join(topology.PresetNames(), "|"))
}

func (in fabricInput) load(path string) (*topology.Fabric, topology.Format, error) {
	f, err := topology.ParseFormat(in.format)
	if err != nil {
		return nil, "", err
	}
	var opts topology.ParseOptions
	if in.nodeClass != "" {
		p, ok := topology.Presets[in.nodeClass]
		if !ok {
			return nil, "", fmt.Errorf("--node-class %q: want the node of a preset, one of %s", in.nodeClass, strings.Join(topology.PresetNames(), ", "))
		}
		opts.NodeClass = p.Class
	}
	return topology.LoadFileWith(path, f, opts)
}

func newTopologyValidateCmd() *cobra.Command {
	var in fabricInput
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a fabric description and print a summary",
		Example: `  gpucloud topology validate topology.conf
  gpucloud topology validate --node-class ndv5 topology.conf
  gpucloud topology validate --format ibnetdiscover fabric.out --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, used, err := in.load(args[0])
			if err != nil {
				return err
			}
			s := f.Summarize()
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					Format topology.Format `json:"format"`
					topology.Summary
				}{used, s})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s): %d nodes, %d GPUs, %d switches\n", args[0], used, s.Nodes, s.GPUs, s.Switches)
			for _, w := range s.Warnings {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: warning: %s\n", args[0], w)
			}
			return nil
		},
	}
	in.flags(cmd, "format")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

func newTopologyShowCmd() *cobra.Command {
	var in fabricInput
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "show FILE",
		Short:   "Counts per level, GPUs by model, bisection bandwidth and oversubscription",
		Example: `  gpucloud topology gen --preset ndv5 --gpus 4096 -o fleet.yaml && gpucloud topology show fleet.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, _, err := in.load(args[0])
			if err != nil {
				return err
			}
			s := f.Summarize()
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), s)
			}
			return printSummary(cmd.OutOrStdout(), s)
		},
	}
	in.flags(cmd, "format")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func printSummary(out io.Writer, s topology.Summary) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "fabric\t%s\n", s.Name)
	fmt.Fprintf(w, "nodes\t%d\n", s.Nodes)
	fmt.Fprintf(w, "gpus\t%d\n", s.GPUs)
	for m, n := range sortedCounts(s.GPUModels) {
		fmt.Fprintf(w, "  %s\t%d\n", m, n)
	}
	fmt.Fprintf(w, "nvlink domains\t%d (largest %d GPUs)\n", s.NVLinkDomains, s.MaxNVLinkGPUs)
	fmt.Fprintf(w, "switches\t%d\n", s.Switches)
	for _, l := range s.Levels {
		fmt.Fprintf(w, "  %s\t%d\n", l.Name, l.Count)
	}
	fmt.Fprintf(w, "domains\t\n")
	for _, d := range s.Domains {
		fmt.Fprintf(w, "  %s\t%d\n", d.Name, d.Count)
	}
	if s.InjectionGbps > 0 {
		fmt.Fprintf(w, "injection\t%.1f Tb/s\n", s.InjectionGbps/1000)
	}
	if s.BisectionGbps != nil {
		fmt.Fprintf(w, "bisection\t%.1f Tb/s\n", *s.BisectionGbps/1000)
	} else {
		fmt.Fprintf(w, "bisection\tunknown (the description has no link bandwidths)\n")
	}
	for _, r := range s.Oversubscription {
		fmt.Fprintf(w, "oversubscription %s\t%.2f:1\n", r.Name, r.Ratio)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning\t%s\n", warn)
	}
	return w.Flush()
}

// sortedCounts yields map entries in key order, so output is stable.
func sortedCounts(m map[string]int) func(func(string, int) bool) {
	return func(yield func(string, int) bool) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slicesSort(keys)
		for _, k := range keys {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

func newTopologyGenCmd() *cobra.Command {
	var preset, out string
	var gpus int
	cmd := &cobra.Command{
		Use:   "gen --preset NAME --gpus N [-o FILE]",
		Short: "Generate a fleet in the native format",
		Long: "Generate a fleet on a non-blocking rail-optimised fat tree sized to the GPU count.\nPresets: " +
			strings.Join(topology.PresetNames(), ", "),
		Example: `  gpucloud topology gen --preset ndv5 --gpus 131072 -o ndv5-131k.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := topology.Generate(preset, gpus)
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				return f.WriteYAML(cmd.OutOrStdout())
			}
			file, err := os.Create(out)
			if err != nil {
				return err
			}
			if err := f.WriteYAML(file); err != nil {
				file.Close()
				return err
			}
			return file.Close()
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "ndv5", "preset: "+strings.Join(topology.PresetNames(), "|"))
	cmd.Flags().IntVar(&gpus, "gpus", 0, "number of GPUs")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	_ = cmd.MarkFlagRequired("gpus")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
