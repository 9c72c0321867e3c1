package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newDeployCmd) }

func newDeployCmd() *cobra.Command {
	var files []string
	var output string
	var dryRun bool
	var cn *conn
	cmd := &cobra.Command{
		Use:   "deploy -f DEPLOYMENT.yaml",
		Short: "Create or update inference deployments (kind: Deployment)",
		Long: `Create a deployment, or update it when one of that name exists (a rolling
update when the command, environment or resources changed; counts,
autoscaling and router settings apply in place). A file may hold several
deployments separated by "---"; "-f -" reads standard input. Each one is
checked here first, so a mistake names the file and the field.

The deployment answers at SERVER/v1/deployments/NAME/... on the leader
replica of the control plane.`,
		Example: `  gpucloud deploy -f chat.yaml
  gpucloud deploy list
  curl -H "Authorization: Bearer $TOKEN" $SERVER/v1/deployments/chat/v1/completions -d '{"prompt": "Hello"}'
  gpucloud deploy delete chat`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML, outName); err != nil {
				return err
			}
			if len(files) == 0 {
				return errors.New("no deployment: give -f FILE (or -f - for standard input)")
			}
			deps, err := readFiles(files, cmd.InOrStdin(), readDeploymentFile)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dryRun {
				for _, d := range deps {
					fmt.Fprintf(out, "deployment %s is valid (not sent)\n", d.Metadata.Name)
				}
				return nil
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			for _, d := range deps {
				before, err := getDeployment(cmd, c, d.Metadata.Name)
				if err != nil && !isNotFound(err) {
					return cn.explain(err, "")
				}
				var got api.Deployment
				if err := c.Do(cmd.Context(), "PUT", "/v1/deployments/"+url.PathEscape(d.Metadata.Name), d, &got); err != nil {
					return cn.explain(err, "")
				}
				switch output {
				case outJSON, outYAML:
					if err := printObject(out, output, &got); err != nil {
						return err
					}
				case outName:
					fmt.Fprintln(out, got.Metadata.Name)
				default:
					verb := "created"
					if before != nil {
						verb = "unchanged"
						if before.Metadata.ResourceVersion != got.Metadata.ResourceVersion {
							verb = "configured"
						}
					}
					fmt.Fprintf(out, "deployment %s %s\n", got.Metadata.Name, verb)
				}
			}
			return nil
		},
	}
	cn = addConnFlags(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "deployment file (YAML or JSON; - for standard input); repeatable")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the files, send nothing")
	addOutputFlag(cmd, &output, outTable, outJSON, outYAML, outName)
	cmd.AddCommand(newGetDeploymentsCmd(cn), newDeleteDeploymentCmd(cn))
	return cmd
}

func isNotFound(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == 404
}

func getDeployment(cmd *cobra.Command, c *client.Client, name string) (*api.Deployment, error) {
	var d api.Deployment
	if err := c.Do(cmd.Context(), "GET", "/v1/deployments/"+url.PathEscape(name), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// readDeploymentFile reads and checks the deployments of a file.
func readDeploymentFile(path string, stdin io.Reader) ([]*api.Deployment, error) {
	docs, where, err := readDocuments(path, stdin, "deployment")
	if err != nil {
		return nil, err
	}
	out := make([]*api.Deployment, 0, len(docs))
	for i, doc := range docs {
		d, err := api.DecodeDeployment(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where(i), err)
		}
		out = append(out, d)
	}
	return out, nil
}

// newGetDeploymentsCmd lists deployments; it is `deploy list`, and is
// made to be `get deployments` too.
func newGetDeploymentsCmd(cn *conn) *cobra.Command {
	var output, tenant string
	cmd := &cobra.Command{
		Use:     "list [NAME...]",
		Aliases: []string{"deployments", "deployment", "ls"},
		Short:   "List deployments with their replicas and load, or show some",
		Example: `  gpucloud deploy list
  gpucloud deploy list chat -o yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := getClient(cn, output)
			if err != nil {
				return err
			}
			path := "/v1/deployments"
			if tenant != "" {
				path += "?tenant=" + url.QueryEscape(tenant)
			}
			ds, err := listNamed(cn, func() ([]api.Deployment, error) {
				var l api.List[api.Deployment]
				err := c.Do(cmd.Context(), "GET", path, nil, &l)
				return l.Items, err
			}, args, "deployment", deploymentName)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if done, err := printMachine(out, output, ds, len(args) == 1, deploymentName); done {
				return err
			}
			return deploymentTable(out, ds, output == outWide, time.Now())
		},
	}
	addOutputFlag(cmd, &output, getFormats...)
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's deployments (admin)")
	return cmd
}

func deploymentName(d *api.Deployment) string { return d.Metadata.Name }

func deploymentTable(w io.Writer, ds []api.Deployment, wide bool, now time.Time) error {
	head := []string{"NAME", "READY", "DESIRED", "REPLICAS", "UPDATED", "IN-FLIGHT", "GPUS", "AGE"}
	if wide {
		head = append(head, "TENANT", "QUEUE", "REVISION", "SCALE", "MESSAGE")
	}
	t := newTable(w, head...)
	for _, d := range ds {
		s, st := d.Spec, d.Status
		row := []string{d.Metadata.Name, strconv.Itoa(st.Ready), strconv.Itoa(st.Desired),
			fmt.Sprintf("%d-%d", s.Replicas.Min, s.Replicas.Max), strconv.Itoa(st.Updated), strconv.Itoa(st.InFlight),
			strconv.Itoa(s.GPUsPerReplica), age(d.Metadata.CreatedAt, now)}
		if wide {
			row = append(row, d.Metadata.Tenant, s.Queue, st.Revision, st.ScaleReason, st.Message)
		}
		t.row(row...)
	}
	return t.flush()
}

func newDeleteDeploymentCmd(cn *conn) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete deployments: their replicas drain (requests in flight finish) and stop",
		Example: `  gpucloud deploy delete chat`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			for _, name := range args {
				var st api.Status
				if err := c.Do(cmd.Context(), "DELETE", "/v1/deployments/"+url.PathEscape(name), nil, &st); err != nil {
					return cn.explain(err, fmt.Sprintf("deployment %q", name))
				}
				fmt.Fprintln(cmd.OutOrStdout(), st.Message)
			}
			return nil
		},
	}
}
