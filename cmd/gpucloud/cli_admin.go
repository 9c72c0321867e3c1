package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
)

func init() {
	extraCommands = append(extraCommands, newTenantCmd, newQueueCmd, newTokenCmd)
}

func newTenantCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants (the teams that own jobs and tokens)",
	}
	var desc, defQueue, output string
	var cn *conn
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant (admin)",
		Long: `Create a tenant. Jobs belong to a tenant; a tenant token (token create --role
tenant) submits and sees its own tenant's jobs only.`,
		Example: `  gpucloud tenant create research --description "LLM pretraining" --default-queue research
  gpucloud token create --role tenant --tenant research`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			t := &api.Tenant{APIVersion: api.Version, Kind: api.KindTenant, Metadata: api.ObjectMeta{Name: args[0]},
				Spec: api.TenantSpec{Description: desc, DefaultQueue: defQueue}}
			if err := api.ValidateTenant(t); err != nil {
				return fmt.Errorf("tenant %s: %w", args[0], err)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			nt, err := c.CreateTenant(cmd.Context(), t)
			if err != nil {
				return cn.explain(err, "")
			}
			if output != outTable {
				return printObject(cmd.OutOrStdout(), output, nt)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tenant %s created\n", nt.Metadata.Name)
			return nil
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the tenant is")
	create.Flags().StringVar(&defQueue, "default-queue", "", "queue of the tenant's jobs that name none (default: \"default\")")
	addOutputFlag(create, &output, outTable, outJSON, outYAML)
	cn = addConnFlags(create)
	cmd.AddCommand(create)
	return cmd
}

func newQueueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Manage queues (quotas of GPUs, fair share)",
	}
	var parent, output string
	var quota, borrow int
	var weight float64
	var tenants []string
	var replace bool
	var cn *conn
	create := &cobra.Command{
		Use:   "create NAME --quota GPUS",
		Short: "Create a queue with a quota of GPUs (admin)",
		Long: `Create a queue of the queue tree. Its quota is the number of GPUs it is
guaranteed (by reclaiming what other queues borrowed); beyond it, its jobs
borrow idle GPUs up to --borrowing-limit, shared among queues by --weight.
Jobs that are not preemptible run within the quota only.`,
		Example: `  gpucloud queue create research --quota 64 --tenant research
  gpucloud queue create research-urgent --parent research --quota 16 --weight 2
  gpucloud queue create batch --quota 0 --borrowing-limit 128`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			if !cmd.Flags().Changed("quota") {
				return fmt.Errorf("queue %s: --quota is required (GPUs guaranteed to the queue; 0 for none)", args[0])
			}
			q := &api.Queue{APIVersion: api.Version, Kind: api.KindQueue, Metadata: api.ObjectMeta{Name: args[0]},
				Spec: api.QueueSpec{Parent: parent, Quota: quota, Weight: weight, Tenants: tenants}}
			if cmd.Flags().Changed("borrowing-limit") {
				q.Spec.BorrowingLimit = &borrow
			}
			if err := api.ValidateQueue(q); err != nil {
				return fmt.Errorf("queue %s: %w", args[0], err)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !replace {
				qs, err := c.Queues(ctx)
				if err != nil {
					return cn.explain(err, "")
				}
				for _, old := range qs {
					if old.Metadata.Name == q.Metadata.Name {
						return fmt.Errorf("queue %q already exists (--replace to change it)", q.Metadata.Name)
					}
				}
			}
			nq, err := c.PutQueue(ctx, q)
			if err != nil {
				return cn.explain(err, "")
			}
			if output != outTable {
				return printObject(cmd.OutOrStdout(), output, nq)
			}
			verb := "created"
			if replace {
				verb = "written"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "queue %s %s: quota %d GPUs\n", nq.Metadata.Name, verb, nq.Spec.Quota)
			return nil
		},
	}
	f := create.Flags()
	f.IntVar(&quota, "quota", 0, "GPUs guaranteed to the queue")
	f.StringVar(&parent, "parent", "", "parent queue (default: a top-level queue)")
	f.Float64Var(&weight, "weight", 1, "share of idle GPUs among sibling queues")
	f.IntVar(&borrow, "borrowing-limit", 0, "most GPUs above the quota the queue may borrow (default: no limit)")
	f.StringSliceVar(&tenants, "tenant", nil, "tenants that may submit to the queue (repeatable; default: all)")
	f.BoolVar(&replace, "replace", false, "replace the queue if it exists")
	addOutputFlag(create, &output, outTable, outJSON, outYAML)
	cn = addConnFlags(create)
	cmd.AddCommand(create)
	return cmd
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens",
	}
	var role, tenant, name, node, output string
	var cn *conn
	create := &cobra.Command{
		Use:   "create --role admin|tenant|agent [--tenant NAME] [--node NAME]",
		Short: "Make an API token (admin); the secret is shown once",
		Long: `Make a token. A tenant token submits and sees its tenant's jobs only, reads
queues and nodes; an agent token runs node agents (with --node, the agent of
that node only: it cannot register, report or ship logs as another); an
admin token does everything. The server keeps only a hash: the token is printed once, on
standard output, so it can go straight into a file.`,
		Example: `  gpucloud token create --role tenant --tenant research > research.token
  GPUCLOUD_TOKEN=$(cat research.token) gpucloud get jobs
  gpucloud token create --role agent --name rack-12 > agent.token
  gpucloud token create --role agent --node gpu-0042 > gpu-0042.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			req := api.TokenRequest{Name: name, Role: api.Role(strings.ToLower(role)), Tenant: tenant, Node: node}
			if req.Role == "" {
				if tenant != "" {
					req.Role = api.RoleTenant
				} else {
					return fmt.Errorf("--role is required: admin, tenant or agent")
				}
			}
			if err := api.ValidateToken(&req); err != nil {
				return fmt.Errorf("token: %w", err)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			tr, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return cn.explain(err, "")
			}
			if output != outTable {
				return printObject(cmd.OutOrStdout(), output, tr)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tr.Token)
			who := string(tr.Role)
			if tr.Tenant != "" {
				who += " of tenant " + tr.Tenant
			}
			if tr.Node != "" {
				who += " of node " + tr.Node
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s (%s) created; it is shown only this once\n", tr.ID, who)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&role, "role", "", "admin|tenant|agent (tenant when --tenant is given)")
	f.StringVar(&tenant, "tenant", "", "the tenant of a tenant token")
	f.StringVar(&name, "name", "", "a name to recognise the token by")
	f.StringVar(&node, "node", "", "bind an agent token to this node")
	create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "tenant", "agent"}, cobra.ShellCompDirectiveNoFileComp))
	addOutputFlag(create, &output, outTable, outJSON, outYAML)
	cn = addConnFlags(create)
	cmd.AddCommand(create)
	return cmd
}
