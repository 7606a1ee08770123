package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/cache"
	"github.com/coldtrace/coldtrace/caps"
	coldmetrics "github.com/coldtrace/coldtrace/metrics"
	"github.com/coldtrace/coldtrace/nodeapi"
	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/tracestore"
	"github.com/coldtrace/coldtrace/watcher"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "record the cold start of every new container on this node",
		Description: `agent runs on a node (as a privileged DaemonSet, or by hand) and records the cold start
of every container that anyone starts through containerd in --namespace: the kubelet
through CRI, ctr, nerdctl. It loads one set of eBPF probes for the node and follows
containerd's events. As soon as a container's task is created, and normally before it
starts, the agent adds the container's cgroup to the in-kernel filter, so the trace sees
the workload from its first instruction (a trace that joined after the start says so);
time zero is the container's create, or the pull of its image when that image arrived
within --pull-window before the create while the agent ran (the kubelet's CRI pull, ctr
pull): the agent watches containerd's content ingests in every namespace, and the trace
gets a pull phase with each layer's bytes and commit, the unpack, and the other pulls
that shared the link, and the puller's connections to the registry (or its mirrors in
--hosts-dir, else /etc/containerd/certs.d): the agent samples the host network's TCP sockets while ingests are active.
A recording ends at the first listen() on a TCP
socket by a process of the container (ready), when the container exits, or --timeout
after its task was created. Each trace names the container, its image (reference and
digest) and, for Kubernetes, its pod, namespace and container name, and ties every file
read to the image layer that provides it. Pod sandboxes (pause containers) are not
recorded, nor are containers whose task was created before the agent started.

When containerd's event stream fails (containerd restarts for an upgrade or after a
crash), the agent keeps running: it resubscribes with backoff and records the containers
whose task was created meanwhile, from their create, marked as joined late.

Traces are written atomically to DATA_DIR/traces/<namespace>/<container id>.json.gz
(root's alone: 0700 directories, 0600 files), for report, advise and diff, and kept
within --retain-bytes and --retain-age, the oldest removed first. On SIGINT or SIGTERM
the agent writes the traces of the containers in flight, marked incomplete, and exits.

--metrics-address (or --api-address) serves the node's API: /metrics, /healthz,
/readyz (ready once the probes are attached and containerd's events followed), and
/api/v1/traces (?namespace=&pod=&workload=&since=&until=) and /api/v1/traces/ID, which
need "Authorization: Bearer TOKEN" with the token in --api-token-file; "coldtrace
advise --from URL" reads them.

Needs a kernel with BTF (/sys/kernel/btf/vmlinux), tracefs mounted, the host's PID and
network namespaces (the kernel reports host PIDs, the agent reads /proc of the
containers' processes and samples the pullers' sockets), containerd's socket and its
root directory, and uid 0 with these capabilities, which it checks at its start
(docs/deploy.md says how each was measured):
` + capsList() + `

Examples:
  sudo coldtrace agent
  sudo coldtrace agent --namespace default --data-dir /tmp/coldtrace --timeout 5m`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "containerd", Value: "/run/containerd/containerd.sock", Usage: "containerd's `SOCKET`"},
			&cli.StringFlag{Name: "namespace", Value: "k8s.io", Usage: "containerd `NAMESPACE` to watch (the kubelet's is k8s.io; ctr and nerdctl use default)"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/coldtrace", Usage: "write traces under `DIR`/traces"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "end a recording not ready this long after its container's task was created (0: no limit)"},
			&cli.DurationFlag{Name: "pull-window", Value: watcher.DefaultPullWindow, Usage: "a container's trace begins at its image's pull when the image arrived this long before the create"},
			&cli.StringFlag{Name: "ring-buffer", Value: "16MiB", Usage: "size of the kernel's event ring buffer (a power of two), shared by all containers"},
			&cli.StringSliceFlag{Name: "device-pattern", Usage: "glob of accelerator device nodes (repeatable; default: /dev/nvidia*, /dev/dri/*, /dev/kfd, /dev/accel/*, /dev/neuron*)"},
			&cli.StringFlag{Name: "manifests", Usage: "apply the prefetch manifests in `DIR` (DIR/TENANT/*.yaml: mount one ConfigMap per namespace there; DIR/*.yaml name their own tenant)"},
			&cli.StringSliceFlag{Name: "manifest-url", Usage: "apply the prefetch manifest at `URL` (repeatable)"},
			&cli.BoolFlag{Name: "attached-manifests", Usage: "apply the prefetch manifest attached in the registry to the image of each new container, for its pod's namespace (see coldtrace manifest)"},
			&cli.DurationFlag{Name: "manifest-poll", Value: 10 * time.Second, Usage: "look for new and changed manifests this often"},
			&cli.DurationFlag{Name: "rewarm-every", Value: 5 * time.Minute, Usage: "apply every manifest again this often, to bring back what was evicted"},
			&cli.StringFlag{Name: "metrics-address", Aliases: []string{"api-address"}, Usage: "serve the node's API at http://`ADDR`: /metrics, /healthz, /readyz, /api/v1/traces (for example :9470)"},
			&cli.StringFlag{Name: "api-token-file", Usage: "the bearer token of /api/v1/traces is in `FILE` (a mounted Secret; without it the traces API refuses every request)"},
			&cli.StringFlag{Name: "retain-bytes", Value: "1GiB", Usage: "keep at most `BYTES` of traces, removing the oldest first (0: no bound)"},
			&cli.DurationFlag{Name: "retain-age", Value: 14 * 24 * time.Hour, Usage: "remove traces older than this (0: no bound)"},
			&cli.IntFlag{Name: "metrics-workloads", Value: coldmetrics.DefaultMaxWorkloads, Usage: "give at most `N` (namespace, workload) pairs series of their own; later ones count as workload \"other\" (docs/metrics.md)"},
		}, slices.Concat(cacheFlags(), exportFlags(), traceStoreFlags())...),
		Action: runAgent,
	}
}

func runAgent(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("agent takes no arguments, got %q", c.Args().Slice())
	}
	if err := caps.Check(caps.Agent); err != nil {
		return err
	}
	ring, err := parseBytes(c.String("ring-buffer"))
	if err != nil {
		return err
	}
	if n := c.Int("metrics-workloads"); n < 1 {
		return cli.Exit(fmt.Sprintf("--metrics-workloads %d: want at least 1", n), 2)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Everything that can fail on bad flags or a busy port is set up before the recording
	// starts, so that a failure never leaves recordings unwritten.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := cache.NewMetrics(coldmetrics.ZeroFirst(reg))
	agentMetrics := coldmetrics.New(reg, coldmetrics.Options{Version: version, Namespace: c.String("namespace"),
		MaxWorkloads: c.Int("metrics-workloads"), DataDir: c.String("data-dir")})
	sinks, stopExport, err := exporters(c, reg)
	defer stopExport() // after the watch below has returned: the last traces are queued
	if err != nil {
		return err
	}
	keep, err := parseBytes(c.String("retain-bytes"))
	if err != nil {
		return fmt.Errorf("--retain-bytes: %w", err)
	}
	store, closeStore, err := openTraceStore(c, tracestore.Options{MaxBytes: keep, MaxAge: c.Duration("retain-age"), Registerer: reg, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer closeStore() // after the recordings in flight are written
	var started atomic.Pointer[watcher.Watcher]
	api, err := nodeapi.Handler(nodeapi.Options{Store: store, TokenFile: c.String("api-token-file"), Metrics: reg,
		Ready: func() error {
			if w := started.Load(); w != nil {
				return w.Ready()
			}
			return errors.New("loading the probes")
		}})
	if err != nil {
		return fmt.Errorf("--api-token-file: %w", err)
	}
	var ln net.Listener
	if addr := c.String("metrics-address"); addr != "" {
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		defer ln.Close()
	}
	var ca *cache.Warmer
	if c.String("manifests") != "" || len(c.StringSlice("manifest-url")) > 0 || c.Bool("attached-manifests") {
		cfg, err := cacheConfig(c)
		if err != nil {
			return err
		}
		if ca, err = cache.New(cfg, metrics, nil); err != nil {
			return err
		}
		defer ca.Close() // after the watch below has returned
	}

	// The metrics server and the manifest watch end the agent when they fail; the
	// recordings in flight are written either way.
	var failed error
	var once sync.Once
	fail := func(err error) {
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			once.Do(func() { failed = err; stop() })
		}
	}
	if ln != nil {
		// Served while the probes load, so that the kubelet sees the agent alive, not ready.
		srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
		go func() { fail(srv.Serve(ln)) }()
		defer srv.Close()
		fmt.Fprintf(os.Stderr, "coldtrace: metrics at http://%s/metrics\n", ln.Addr())
		fmt.Fprintf(os.Stderr, "coldtrace: node API at http://%s (/healthz, /readyz, /api/v1/traces)\n", ln.Addr())
	}

	a, err := watcher.Start(ctx, watcher.Options{
		Address:         c.String("containerd"),
		Namespace:       c.String("namespace"),
		DataDir:         c.String("data-dir"),
		Store:           store,
		Timeout:         c.Duration("timeout"),
		PullWindow:      c.Duration("pull-window"),
		HostsDir:        c.String("hosts-dir"),
		RingBufferBytes: int(ring),
		DevicePatterns:  c.StringSlice("device-pattern"),
		Log:             os.Stderr,
		Sinks:           append([]func(*trace.Trace){agentMetrics.Observe}, sinks...),
	})
	if err != nil {
		return err
	}
	agentMetrics.Watch(a)
	started.Store(a)
	fmt.Fprintf(os.Stderr, "coldtrace: watching containerd at %s, namespace %s; traces in %s\n",
		c.String("containerd"), c.String("namespace"), c.String("data-dir"))
	var watching sync.WaitGroup
	if c.Bool("attached-manifests") {
		watching.Add(1)
		go func() {
			defer watching.Done()
			fail(ca.WatchAttached(ctx, cache.AttachedOptions{Containerd: c.String("containerd"), Namespace: c.String("namespace"),
				Every: c.Duration("rewarm-every"), Registry: []remote.Option{registryAuth}, Log: os.Stderr}))
		}()
	}
	if ca != nil && (c.String("manifests") != "" || len(c.StringSlice("manifest-url")) > 0) {
		watching.Add(1)
		go func() {
			defer watching.Done()
			fail(cache.Watch(ctx, cache.WatchOptions{
				Dir: c.String("manifests"), URLs: c.StringSlice("manifest-url"),
				Poll: c.Duration("manifest-poll"), Every: c.Duration("rewarm-every"), Log: os.Stderr,
			}, ca.Apply, metrics))
		}()
	}
	err = a.Wait()
	stop() // the recording ended on its own (a ring-buffer failure): end the watch too
	watching.Wait()
	once.Do(func() {}) // no failure after this point is reported
	return errors.Join(failed, err)
}

// capsList lists the agent's capabilities for its help.
func capsList() string {
	var b strings.Builder
	for _, c := range caps.Agent {
		fmt.Fprintf(&b, "  CAP_%-16s %s\n", c.Name, c.Why)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
