package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newCompletionCmd) }

func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script (job IDs and node names complete from the API)",
		Long: `Print a completion script for your shell. Subcommands and flags complete
offline; job IDs and node names are asked of the server the CLI is set up for.`,
		Example: `  source <(gpucloud completion bash)                                  # this shell
  gpucloud completion bash > /etc/bash_completion.d/gpucloud           # every bash
  gpucloud completion zsh > "${fpath[1]}/_gpucloud"                    # zsh
  gpucloud completion fish > ~/.config/fish/completions/gpucloud.fish  # fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(out)
			}
			return fmt.Errorf("completion %s: want bash, zsh, fish or powershell", args[0])
		},
	}
}
