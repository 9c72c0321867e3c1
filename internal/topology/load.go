package topology

import (
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Format names a way a fabric is written down.
type Format string

const (
	FormatAuto          Format = "auto"
	FormatNative        Format = "native"        // gpucloud/v1 Fabric, YAML or JSON
	FormatSlurm         Format = "slurm"         // Slurm topology.conf (tree and block)
	FormatSlurmYAML     Format = "slurm-yaml"    // Slurm topology.yaml
	FormatIBNetDiscover Format = "ibnetdiscover" // ibnetdiscover output
	FormatNCCLXML       Format = "nccl-xml"      // NCCL topology XML (one node)
)

// Formats lists the formats Load understands, for help texts.
var Formats = []Format{FormatAuto, FormatSlurm, FormatSlurmYAML, FormatIBNetDiscover, FormatNCCLXML, FormatNative}

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown format %q (want one of auto, slurm, slurm-yaml, ibnetdiscover, nccl-xml, native)", s)
}

// Error is a problem in a fabric description, with where it was found.
// Line is 0 when the problem is not tied to one line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// errorf builds an *Error.
func errorf(file string, line int, format string, args ...any) *Error {
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// LoadFile reads and parses a fabric description.
func LoadFile(path string, format Format) (*Fabric, Format, error) {
	return LoadFileWith(path, format, ParseOptions{})
}

// LoadFileWith is LoadFile with options.
func LoadFileWith(path string, format Format, opts ParseOptions) (*Fabric, Format, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	return ParseWith(path, data, format, opts)
}

// ParseOptions say what a description may not: the hardware of its nodes.
type ParseOptions struct {
	// NodeClass, when it has a name or GPUs, is every node's hardware in the
	// formats that name no GPUs (Slurm topology.conf and topology.yaml,
	// ibnetdiscover; their default is 8 GPUs of model "unknown"), and
	// overrides the model, memory and link speeds an NCCL topology gives.
	// The native format names its own classes: a class given for it is an
	// error.
	NodeClass NodeClass
}

func (o ParseOptions) hasClass() bool { return o.NodeClass.Name != "" || o.NodeClass.GPUs != 0 }

// Parse parses data (named name in errors) in the given format; FormatAuto
// detects it. It returns the format it used.
func Parse(name string, data []byte, format Format) (*Fabric, Format, error) {
	return ParseWith(name, data, format, ParseOptions{})
}

// ParseWith is Parse with options.
func ParseWith(name string, data []byte, format Format, opts ParseOptions) (*Fabric, Format, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, "", errorf(name, 0, "file is empty")
	}
	if !isText(data) {
		return nil, "", errorf(name, 0, "file is binary, not a fabric description")
	}
	if format == FormatAuto || format == "" {
		var err error
		if format, err = Detect(name, data); err != nil {
			return nil, "", err
		}
	}
	var (
		f   *Fabric
		err error
	)
	switch format {
	case FormatNative:
		if opts.hasClass() {
			return nil, "", fmt.Errorf("%s: a node class applies to formats that name no GPUs; this %s description names its own node classes", name, format)
		}
		f, err = parseNative(name, data)
	case FormatSlurm:
		f, err = ParseSlurmConf(name, data, SlurmOptions{NodeClass: opts.NodeClass})
	case FormatSlurmYAML:
		f, err = ParseSlurmYAML(name, data, SlurmOptions{NodeClass: opts.NodeClass})
	case FormatIBNetDiscover:
		f, err = ParseIBNetDiscover(name, data, IBNetDiscoverOptions{Class: opts.NodeClass})
	case FormatNCCLXML:
		f, err = ParseNCCLXML(name, data, NCCLXMLOptions{Class: opts.NodeClass})
	default:
		return nil, "", fmt.Errorf("%s: unknown format %q", name, format)
	}
	return f, format, err
}

// Detect tells the format of a description from its content.
func Detect(name string, data []byte) (Format, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return "", errorf(name, 0, "file is empty")
	}
	if !isText(data) {
		return "", errorf(name, 0, "file is binary, not a fabric description")
	}
	head := data
	if len(head) > 64<<10 {
		head = head[:64<<10]
	}
	trimmed := bytes.TrimLeft(head, " \t\r\n\ufeff")
	s := string(head)
	switch {
	case bytes.HasPrefix(trimmed, []byte("<")):
		return FormatNCCLXML, nil
	case strings.Contains(s, "gpucloud/v1"):
		return FormatNative, nil
	case containsLineStart(s, "SwitchName=") || containsLineStart(s, "BlockName=") || containsLineStart(s, "BlockSizes=") ||
		containsLineStart(s, "RingName="):
		return FormatSlurm, nil
	case containsLineStart(s, "Switch\t") || containsLineStart(s, "Switch ") || containsLineStart(s, "Ca\t") ||
		containsLineStart(s, "vendid=") || containsLineStart(s, "switchguid="):
		return FormatIBNetDiscover, nil
	case containsLineStart(s, "- topology:") || containsLineStart(s, "topology:") || strings.Contains(s, "cluster_default"):
		return FormatSlurmYAML, nil
	}
	return "", errorf(name, 0, "cannot tell the format (not Slurm topology.conf/yaml, ibnetdiscover, NCCL XML or gpucloud/v1); pass --format")
}

func containsLineStart(s, prefix string) bool {
	for line := range strings.Lines(s) {
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), prefix) {
			return true
		}
	}
	return false
}

// isText rejects NUL bytes and invalid UTF-8 in the first 8 KiB.
func isText(data []byte) bool {
	if len(data) > 8192 {
		data = data[:8192]
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return false
	}
	// Allow a cut multi-byte rune at the end of the sample.
	for i := 0; i < 4 && len(data) > 0; i++ {
		if validUTF8(data) {
			return true
		}
		data = data[:len(data)-1]
	}
	return false
}
