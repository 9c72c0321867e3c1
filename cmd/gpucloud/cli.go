package main

// What the user commands (submit, get, describe, logs, cancel, cordon, top,
// tenant/queue/token create) share: where the server is and which token to
// use, the API client, output formats, and errors that fit on one line.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// Environment variables of the CLI.
const (
	envServer = "GPUCLOUD_SERVER"
	envToken  = "GPUCLOUD_TOKEN"
	envConfig = "GPUCLOUD_CONFIG" // another config file than ~/.gpucloud/config
)

// cliConfig is ~/.gpucloud/config: the server and the token the CLI uses
// when neither flags nor the environment name them. `gpucloud up` writes
// it.
type cliConfig struct {
	Server    string `yaml:"server"`
	Token     string `yaml:"token,omitempty"`
	TokenFile string `yaml:"token-file,omitempty"`
}

// defaultConfigPath is $GPUCLOUD_CONFIG, else ~/.gpucloud/config.
func defaultConfigPath() string {
	if p := os.Getenv(envConfig); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".gpucloud", "config")
	}
	return filepath.Join(home, ".gpucloud", "config")
}

// loadConfig reads a config file; a missing file is an empty config.
func loadConfig(path string) (*cliConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &cliConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var c cliConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if c.TokenFile != "" && !filepath.IsAbs(c.TokenFile) {
		c.TokenFile = filepath.Join(filepath.Dir(path), c.TokenFile)
	}
	return &c, nil
}

// writeConfig writes a config file readable by its owner only (it holds a
// token), through a rename so a reader never sees half of it.
func writeConfig(path string, c *cliConfig) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	b = append([]byte("# gpucloud CLI settings (written by `gpucloud up`). Flags (--server, --token)\n# and GPUCLOUD_SERVER / GPUCLOUD_TOKEN take precedence.\n"), b...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// conn is how a command reaches the API: the flags, then the environment,
// then the config file.
type conn struct {
	server, token, tokenFile, configFile string
	timeout                              time.Duration

	// resolved
	url, source string
}

// addConnFlags adds --server, --token, --token-file, --config and
// --request-timeout to cmd and its subcommands.
func addConnFlags(cmd *cobra.Command) *conn {
	c := &conn{}
	f := cmd.PersistentFlags()
	f.StringVar(&c.server, "server", "", "API URL (default $"+envServer+", then the config file)")
	f.StringVar(&c.token, "token", "", "API token (default $"+envToken+", then the config file)")
	f.StringVar(&c.tokenFile, "token-file", "", "file holding the API token")
	f.StringVar(&c.configFile, "config", "", "config file (default $"+envConfig+" or ~/.gpucloud/config)")
	f.DurationVar(&c.timeout, "request-timeout", 30*time.Second, "time limit of one API request")
	return c
}

// resolve works out the server and the token.
func (c *conn) resolve() (server, token string, err error) {
	path := c.configFile
	if path == "" {
		path = defaultConfigPath()
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return "", "", err
	}
	server, c.source = c.server, "--server"
	if server == "" {
		server, c.source = os.Getenv(envServer), "$"+envServer
	}
	if server == "" {
		server, c.source = cfg.Server, path
	}
	if server == "" {
		return "", "", fmt.Errorf("no server: run `gpucloud up` (it writes %s), or pass --server or set %s", path, envServer)
	}
	server = normalizeURL(server)
	switch {
	case c.token != "" && c.tokenFile != "":
		return "", "", errors.New("--token and --token-file exclude each other")
	case c.token != "":
		token = c.token
	case c.tokenFile != "":
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", "", fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	case os.Getenv(envToken) != "":
		token = os.Getenv(envToken)
	case cfg.Server != "" && normalizeURL(cfg.Server) != server:
		// The config's token belongs to the config's server: never send it
		// to another one.
		return "", "", fmt.Errorf("no token for %s: pass --token or set %s (the token in %s is for %s)", server, envToken, path, cfg.Server)
	case cfg.Token != "":
		token = cfg.Token
	case cfg.TokenFile != "":
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return "", "", fmt.Errorf("config %s: token-file: %w", path, err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return "", "", fmt.Errorf("no token: pass --token or set %s (`gpucloud up` puts the admin token in %s)", envToken, path)
	}
	c.url = server
	return server, token, nil
}

func normalizeURL(s string) string {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	if s != "" && !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}

// client makes an API client. A dead server is retried for a few seconds
// only (the control plane restarting), not the client's default half
// minute: a user waiting on a typo deserves an answer.
func (c *conn) client() (*client.Client, error) {
	server, token, err := c.resolve()
	if err != nil {
		return nil, err
	}
	cl := client.New([]string{server}, token, client.Options{Timeout: c.timeout})
	cl.Retry = 3 * time.Second
	return cl, nil
}

// explain turns an API or network error into one line that says what to
// do. what names the object for a 404 (`job "x"`); empty keeps the
// server's message.
func (c *conn) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	var ae *client.Error
	if errors.As(err, &ae) {
		msg := ae.Msg
		if len(ae.Fields) > 0 {
			parts := make([]string, len(ae.Fields))
			for i, f := range ae.Fields {
				parts[i] = f.Field + ": " + f.Message
			}
			msg = strings.Join(parts, "; ")
		}
		switch ae.Code {
		case 401:
			return fmt.Errorf("the server refused the token (%s): check --token, $%s or the config file", msg, envToken)
		case 403:
			return fmt.Errorf("forbidden: %s", msg)
		case 404:
			if what != "" {
				return fmt.Errorf("%s not found", what)
			}
		}
		return errors.New(msg)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ue *url.Error
	var oe *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &oe) && oe.Op == "dial") {
		return fmt.Errorf("cannot reach the gpucloud server at %s (from %s): is `gpucloud up` running?", c.url, c.source)
	}
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %v", strings.ToUpper(ue.Op), c.url, ue.Err)
	}
	return err
}

// Output formats.

const (
	outTable = "table"
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
	outName  = "name"
)

// addOutputFlag adds -o with the formats given (the first is the default).
func addOutputFlag(cmd *cobra.Command, p *string, formats ...string) {
	cmd.Flags().StringVarP(p, "output", "o", formats[0], strings.Join(formats, "|"))
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

func checkOutput(o string, formats ...string) error {
	for _, f := range formats {
		if o == f {
			return nil
		}
	}
	return fmt.Errorf("-o %s: want one of %s", o, strings.Join(formats, ", "))
}

// printObject writes v as JSON or YAML with the API's field names.
func printObject(w io.Writer, format string, v any) error {
	if format == outJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	b, err := toYAML(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// toYAML writes v as YAML through its JSON form, so the keys are the API's
// (camelCase, as in job files) and keep their order.
func toYAML(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, err
	}
	plainStyle(&n)
	return yaml.Marshal(&n)
}

// plainStyle drops the flow style that parsing JSON leaves on every node.
func plainStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		plainStyle(c)
	}
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)}
	if len(header) > 0 {
		fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	}
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// age writes how long ago t was, as kubectl does: 45s, 3m12s, 5h, 2d3h.
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		if s := int(d.Seconds()) % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", int(d.Minutes()), s)
		}
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		days := int(d.Hours()) / 24
		if h := int(d.Hours()) % 24; h != 0 && days < 8 {
			return fmt.Sprintf("%dd%dh", days, h)
		}
		return fmt.Sprintf("%dd", days)
	}
}

// Jobs.

// findJob reads a job by ID, or by name when no ID matches. Names repeat
// (every submission of a file makes a new job): reading picks the newest
// and says so on note; acting (live) needs the one job of that name that
// has not ended.
func findJob(ctx context.Context, cn *conn, c *client.Client, ref string, note io.Writer, live bool) (*api.Job, error) {
	j, err := c.Job(ctx, ref)
	if err == nil {
		return j, nil
	}
	if !client.IsCode(err, 404) {
		return nil, cn.explain(err, "")
	}
	if api.ValidName(ref) != "" {
		return nil, fmt.Errorf("job %q not found", ref)
	}
	l, err := c.Jobs(ctx, client.JobFilter{Name: ref})
	if err != nil {
		return nil, cn.explain(err, "")
	}
	jobs := l.Items
	if live {
		kept := jobs[:0]
		for _, j := range jobs {
			if !j.Status.Phase.Terminal() {
				kept = append(kept, j)
			}
		}
		if len(kept) == 0 && len(jobs) > 0 {
			return nil, fmt.Errorf("every job named %q has ended", ref)
		}
		jobs = kept
	}
	// IDs begin with the submission time: the last sorts newest.
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].Metadata.ID < jobs[b].Metadata.ID })
	switch {
	case len(jobs) == 0:
		return nil, fmt.Errorf("job %q not found", ref)
	case len(jobs) == 1:
		return &jobs[0], nil
	case live:
		ids := make([]string, len(jobs))
		for i, j := range jobs {
			ids[i] = j.Metadata.ID
		}
		if len(ids) > 4 {
			ids = append(ids[:4], "...")
		}
		return nil, fmt.Errorf("%d running or pending jobs are named %q (%s): give an ID", len(jobs), ref, strings.Join(ids, ", "))
	}
	newest := &jobs[len(jobs)-1]
	if note != nil {
		fmt.Fprintf(note, "(%d jobs are named %s: this is the newest, %s)\n", len(jobs), ref, newest.Metadata.ID)
	}
	return newest, nil
}

// allJobs lists every job the filter matches, page by page.
func allJobs(ctx context.Context, c *client.Client, f client.JobFilter) ([]api.Job, error) {
	var out []api.Job
	f.Limit = 1000
	for {
		l, err := c.Jobs(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if len(l.Items) < f.Limit {
			return out, nil
		}
		f.After = l.Items[len(l.Items)-1].Metadata.ID
	}
}

// jobGPUs is the number of GPUs a job asks for.
func jobGPUs(j *api.Job) int { return j.Spec.Replicas * j.Spec.GPUsPerReplica }

// placedGPUs is the number of GPUs a job holds now.
func placedGPUs(j *api.Job) int {
	if j.Status.Phase != api.PhaseRunning || j.Status.Placement == nil {
		return 0
	}
	return j.Status.Placement.GPUs
}

// nodeStatus is a node's state in one word or two, as kubectl writes
// "Ready,SchedulingDisabled".
func nodeStatus(n *api.Node) string {
	s := string(n.Status.Phase)
	switch {
	case n.Spec.Draining:
		s += ",Draining"
	case n.Spec.Cordoned:
		s += ",Cordoned"
	}
	if len(n.Status.Unhealthy) > 0 {
		s += ",Unhealthy"
	}
	return s
}

// nodeModel names a node's GPU model, marked when the GPUs are emulated.
func nodeModel(n *api.Node) string {
	gpus := n.Status.Inventory.GPUs
	if len(gpus) == 0 {
		return ""
	}
	m := gpus[0].Model
	if m == "" {
		m = "?"
	}
	if gpus[0].Emulated {
		m += " (emulated)"
	}
	return m
}

// signalCtx ends on Ctrl-C, for commands that follow a stream.
func signalCtx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}
