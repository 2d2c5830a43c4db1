package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock/internal/stress"
)

// newStressWorkerCmd is the default job of `dlock stress`, run by each
// `dlock run` it launches. It is hidden: people have no use for it.
func newStressWorkerCmd(e *env) *cobra.Command {
	var cfg stress.WorkerConfig
	cmd := &cobra.Command{
		Use:    stress.WorkerCommand + " --run N --resource FILE --results FILE [--hold D] [-- COMMAND [ARGS...]]",
		Short:  "The job `dlock stress` runs under `dlock run` (internal)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Resource == "" || cfg.Results == "" {
				return usageErr(cmd, "--resource and --results are required")
			}
			if dash := cmd.ArgsLenAtDash(); dash != 0 && len(args) > 0 {
				return usageErr(cmd, "unexpected argument %q; put COMMAND after --", args[0])
			}
			cfg.Command = args
			cfg.Stdout, cfg.Stderr = e.stdout, e.stderr
			status, err := stress.Work(cmd.Context(), cfg)
			if err != nil {
				if status == 0 {
					status = ExitInternal
				}
				return exitWith(status, "%s: %s", stress.WorkerCommand, strings.TrimPrefix(err.Error(), "stress: "))
			}
			if status != 0 {
				return silentExit(status)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&cfg.Run, "run", 0, "run id")
	fs.Var(&durationValue{d: &cfg.Hold}, "hold", "how long to hold the lock")
	fs.StringVar(&cfg.Resource, "resource", "", "fenced resource file")
	fs.StringVar(&cfg.Results, "results", "", "results file (JSON lines, appended)")
	return cmd
}
