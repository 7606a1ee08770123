package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/internal/example"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

func recordCommand() *cli.Command {
	return &cli.Command{
		Name:      "record",
		Usage:     "run a command under tracing until it is ready, and break its start down by phase",
		ArgsUsage: "-- COMMAND [ARGS...]  |  --image REF [-- ARGS...]",
		Description: `record starts COMMAND under the eBPF tracer and follows its whole process tree until
the first listen() on a TCP socket (ready), until it exits, until --timeout passes, or
until Ctrl-C. It prints the phase breakdown and writes the trace, which report, advise
and diff read. A recording that did not reach ready is written too, marked incomplete.
Unless --keep-running is given, the command is stopped once the recording ends.

With --image, record pulls REF through containerd (time zero is the pull request), creates
and starts a container of it, and traces the whole cold start: the pull and unpack of each
layer, the create, and the container's processes until one of them listens. Each file read
is tied to the image layer that provides it. Other pulls that download on the node at the
same time, in any containerd namespace, are reported as pull contention, with their
bytes during the overlap. ARGS, when given, replace the image's entrypoint and command
(as with ctr run). The container is removed at the end; the image stays, so use --fresh
to record the pull of a new node again. A pull, create or start that fails still writes
a trace (outcome failed, with the error and the pull as far as it got) and exits 1;
Ctrl-C cancels the pull and writes the partial trace, exit 2.

Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE and CAP_SYS_PTRACE) and a kernel
with BTF (/sys/kernel/btf/vmlinux).

Examples:
  sudo coldtrace record --example
  sudo coldtrace record -o llama.json.gz -- python3 -m vllm.entrypoints.openai.api_server
  sudo coldtrace record --timeout 2m --device-pattern '/dev/nvidia*' -- ./serve
  sudo coldtrace record --image registry.example.com/llm-server:v3 --fresh --net-host`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "trace.json.gz", Usage: "write the trace to `FILE` (gzipped when it ends in .gz)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "stop and mark the trace incomplete if not ready by then"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "print the breakdown as table, json, or none"},
			&cli.StringFlag{Name: "ring-buffer", Value: "16MiB", Usage: "size of the kernel's event ring buffer (a power of two)"},
			&cli.StringSliceFlag{Name: "device-pattern", Usage: "glob of accelerator device nodes (repeatable; default: /dev/nvidia*, /dev/dri/*, /dev/kfd, /dev/accel/*, /dev/neuron*)"},
			&cli.BoolFlag{Name: "keep-running", Usage: "leave the command running after it is ready"},
			&cli.BoolFlag{Name: "example", Usage: "record the built-in example workload (a model download, mmapped weights, a listen)"},
			&cli.StringFlag{Name: "image", Usage: "record the cold start of a container of image `REF`, pulled and run through containerd"},
			&cli.StringFlag{Name: "containerd", Value: "/run/containerd/containerd.sock", Usage: "containerd's `SOCKET` (with --image)"},
			&cli.StringFlag{Name: "namespace", Value: "default", Usage: "containerd `NAMESPACE` to pull and run in (with --image; the kubelet's is k8s.io)"},
			&cli.BoolFlag{Name: "plain-http", Usage: "pull over HTTP instead of HTTPS (with --image)"},
			&cli.StringFlag{Name: "hosts-dir", Usage: "registry hosts `DIR` with mirrors and TLS settings, like /etc/containerd/certs.d (with --image)"},
			&cli.BoolFlag{Name: "fresh", Usage: "remove the image and its unshared content first, as on a new node (with --image)"},
			&cli.BoolFlag{Name: "net-host", Usage: "run the container in the host's network namespace (with --image)"},
			&cli.StringFlag{Name: "container-log", Usage: "write the container's stdout and stderr to `FILE` (with --image; default: discarded)"},
			&cli.StringSliceFlag{Name: "env", Usage: "set `KEY=VALUE` in the container's environment (with --image; repeatable)"},
			&cli.StringSliceFlag{Name: "mount", Usage: "bind-mount host directory SRC at DST in the container, read-only unless :rw is added: `SRC:DST[:ro|rw]` (with --image; repeatable), as a pod mounts the cache agent's artifact directory"},
		},
		Action: runRecord,
	}
}

func runRecord(c *cli.Context) error {
	ring, err := parseBytes(c.String("ring-buffer"))
	if err != nil {
		return err
	}
	format := c.String("format")
	if format != "table" && format != "json" && format != "none" {
		return fmt.Errorf("unknown --format %q: want table, json or none", format)
	}
	if c.String("image") != "" {
		return recordImage(c, int(ring), format)
	}

	command := c.Args().Slice()
	if c.Bool("example") {
		if len(command) > 0 {
			return fmt.Errorf("--example takes no command")
		}
		dir, err := os.MkdirTemp("", "coldtrace-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		env, err := example.Prepare(dir)
		if err != nil {
			return fmt.Errorf("prepare the example: %w", err)
		}
		defer env.Close()
		self, err := os.Executable()
		if err != nil {
			return err
		}
		command = env.Command(self)
	}
	if len(command) == 0 {
		return fmt.Errorf("nothing to record: give a command after --, --example or --image")
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	t, err := recorder.Record(ctx, recorder.Options{
		Command:         command,
		Stdin:           os.Stdin,
		Stdout:          os.Stderr, // keep our stdout for the report
		Stderr:          os.Stderr,
		Timeout:         c.Duration("timeout"),
		KeepRunning:     c.Bool("keep-running"),
		RingBufferBytes: int(ring),
		DevicePatterns:  c.StringSlice("device-pattern"),
		Log:             os.Stderr,
	})
	if err != nil {
		return err
	}
	return output(c, t, format)
}

// output writes the trace, prints its breakdown and ends with the status of its outcome.
func output(c *cli.Context, t *trace.Trace, format string) error {
	out := c.String("output")
	if err := trace.WriteFile(out, t); err != nil {
		return err
	}
	if format != "none" {
		if err := report.Render(os.Stdout, t, format); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "coldtrace: trace written to %s (%s)\n", out, t.Outcome)
	switch t.Outcome {
	case trace.OutcomeReady, trace.OutcomeExited:
		if t.Error != "" {
			return cli.Exit(t.Error, 1)
		}
		return nil
	case trace.OutcomeFailed:
		return cli.Exit(t.Error, 1)
	}
	return cli.Exit(t.Error, 2)
}

func exampleWorkloadCommand() *cli.Command {
	return &cli.Command{
		Name:   "example-workload",
		Usage:  "the workload that record --example traces",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true},
			&cli.StringFlag{Name: "url", Required: true},
		},
		Action: func(c *cli.Context) error {
			return example.Run(c.String("dir"), c.String("url"), os.Stderr)
		},
	}
}
