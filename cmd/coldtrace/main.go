// Command coldtrace finds out where the cold start of a container goes, and takes it away.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time (make build).
var version = "dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "coldtrace:", err)
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// newApp is the command line: its commands and their flags.
func newApp() *cli.App {
	return &cli.App{
		Name:    "coldtrace",
		Usage:   "find out where a cold start goes, and take it away",
		Version: version,
		Description: `coldtrace traces the cold start of a workload with eBPF: the files and byte ranges it
reads, the model files it downloads, GPU driver initialisation, and the moment it is
ready. It breaks the start-up latency down by phase (pull, unpack, create, init, fetch,
load, gpu, compute) and turns recorded traces into recommendations and prefetch
manifests.

Start with the built-in example:   sudo coldtrace record --example
Record your own server:            sudo coldtrace record -o trace.json.gz -- python3 server.py
Look at a trace again:             coldtrace report trace.json.gz --format html -o trace.html`,
		Commands: []*cli.Command{
			recordCommand(),
			reportCommand(),
			adviseCommand(),
			manifestCommand(),
			diffCommand(),
			agentCommand(),
			warmCommand(),
			lookupCommand(),
			exampleWorkloadCommand(),
		},
	}
}
