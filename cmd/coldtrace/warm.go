package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/cache"
	"github.com/coldtrace/coldtrace/cache/store"
	"github.com/coldtrace/coldtrace/manifest"
)

func warmCommand() *cli.Command {
	return &cli.Command{
		Name:      "warm",
		Usage:     "run the cache agent once: pre-pull, stage and warm what prefetch manifests list",
		ArgsUsage: "MANIFEST|URL...",
		Description: `warm does once what the agent does continuously with --manifests: for each prefetch
manifest (written by coldtrace advise -o, a file or an http(s) URL) it
  1. pre-pulls the images by digest through containerd into --namespace (the kubelet's),
     under --pull-rate, and pauses whenever another client (a container waiting to start)
     is pulling, so that it never slows a live cold start down;
  2. stages the model artifacts in the tenant's directory of the artifact store (--store):
     verified by sha256, written atomically, resumed where a download stopped, fetched
     again when a cached copy is corrupt; a pod mounts STORE/tenants/TENANT read-only and
     finds each file at sha256/HEX. A file already there is hashed again only when its
     inode changed since it was last hashed (written, replaced, linked); --verify hashes
     every one, to find bits rotted on the disk. Downloads time out when an origin does
     not connect within 30 s, answer within 60 s or send nothing for 60 s (the partial
     file is kept, and the next run resumes it). They never connect to loopback,
     link-local (the cloud metadata service), unspecified or multicast addresses, nor
     follow a redirect there, unless --origin-allow names them;
  3. reads the hot byte ranges of the image layers and staged artifacts into the page
     cache, in the order the workload first needs them, and checks with mincore how much
     is resident.
What is already there is found and left alone. It shows a progress bar per action and
ends with a summary of what was done, what was already there, and what was refused and
why: paths outside the layers or the tenant's store, files that changed since they were
traced, artifacts without a digest or an origin URL. The exit status is 1 when anything
was refused or failed, 2 for bad usage.

The tenant (whose store directory the artifacts go to) is --tenant, else the manifest's
spec.tenant, else its metadata.namespace, else "default"; a manifest that claims another
tenant than --tenant is refused.

Needs root, or: access to containerd's socket; CAP_DAC_READ_SEARCH to read containerd's
snapshots; write access to --store.

Examples:
  sudo coldtrace warm llm.manifest.yaml
  sudo coldtrace warm --tenant team-a --pull-rate 200MB --warm-workers 8 https://cfg.example/llm.yaml`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "tenant", Usage: "stage artifacts for `TENANT` (a Kubernetes namespace name)"},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "print the summary as table or json"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "list every warmed file in the summary"},
			&cli.StringFlag{Name: "containerd", Value: "/run/containerd/containerd.sock", Usage: "containerd's `SOCKET`"},
			&cli.StringFlag{Name: "namespace", Value: "k8s.io", Usage: "containerd `NAMESPACE` to pull into (the kubelet's is k8s.io; ctr and nerdctl use default)"},
		}, cacheFlags()...),
		Action: runWarm,
	}
}

// cacheFlags are the cache agent's settings that warm and agent share, beside --containerd
// and --namespace, which each defines for itself.
func cacheFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "plain-http", Usage: "pull over HTTP instead of HTTPS"},
		&cli.StringFlag{Name: "hosts-dir", Usage: "registry hosts `DIR` with mirrors and TLS settings, like /etc/containerd/certs.d"},
		&cli.StringFlag{Name: "store", Value: "/var/lib/coldtrace/artifacts", Usage: "the artifact store's `DIR`"},
		&cli.StringFlag{Name: "quota", Usage: "the artifact store's size limit in `BYTES` (least recently used files are evicted; default: none)"},
		&cli.StringSliceFlag{Name: "origin-allow", Usage: "let artifact downloads connect to addresses in `CIDR` (repeatable), which are refused by default: loopback, link-local (the cloud metadata service at 169.254.169.254), unspecified and multicast; redirects are checked too"},
		&cli.BoolFlag{Name: "verify", Usage: "hash every artifact already in the store in full, to find bits rotted on the disk; without it, a file whose inode (size, links, mtime, ctime) is unchanged since it was last hashed is trusted without being read"},
		&cli.StringFlag{Name: "pull-rate", Usage: "limit image pulls to `BYTES` per second (default: none)"},
		&cli.StringFlag{Name: "stage-rate", Usage: "limit artifact downloads to `BYTES` per second (default: none)"},
		&cli.StringFlag{Name: "warm-rate", Usage: "limit page-cache warming to `BYTES` per second of disk reads (default: none)"},
		&cli.IntFlag{Name: "images", Value: 1, Usage: "pull `N` images at once"},
		&cli.IntFlag{Name: "warm-workers", Value: 4, Usage: "warm `N` files at once"},
	}
}

func cacheConfig(c *cli.Context) (cache.Config, error) {
	cfg := cache.Config{
		Containerd: c.String("containerd"), Namespace: c.String("namespace"),
		PlainHTTP: c.Bool("plain-http"), HostsDir: c.String("hosts-dir"),
		StoreRoot: c.String("store"), Verify: c.Bool("verify"), Images: c.Int("images"), WarmWorkers: c.Int("warm-workers"),
	}
	for _, f := range []struct {
		name string
		to   *int64
	}{{"quota", &cfg.Quota}, {"pull-rate", &cfg.PullRate}, {"stage-rate", &cfg.StageRate}, {"warm-rate", &cfg.WarmRate}} {
		n, err := flagBytes(c, f.name)
		if err != nil {
			return cfg, err
		}
		*f.to = n
	}
	for _, v := range c.StringSlice("origin-allow") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return cfg, cli.Exit(fmt.Sprintf("--origin-allow %q: want an address range such as 127.0.0.0/8 or fd00::/8: %v", v, err), 2)
		}
		cfg.OriginAllow = append(cfg.OriginAllow, p.Masked())
	}
	return cfg, nil
}

func runWarm(c *cli.Context) error {
	args, err := interspersed(c)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return cli.Exit("no manifests given: coldtrace warm MANIFEST|URL...", 2)
	}
	if f := c.String("format"); f != "table" && f != "json" {
		return cli.Exit(fmt.Sprintf("unknown --format %q: table or json", f), 2)
	}
	cfg, err := cacheConfig(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Read every manifest before doing anything: a bad one stops the run, not half of it.
	var found []cache.Found
	for _, a := range args {
		f := readManifest(ctx, a)
		if f.Err != nil {
			return f.Err
		}
		found = append(found, f)
	}
	progress := cache.NewProgress(c.App.ErrWriter, isTerminal(os.Stderr))
	warmer, err := cache.New(cfg, nil, progress)
	if err != nil {
		return err
	}
	defer warmer.Close()
	ok := true
	var sums []*cache.Summary
	for _, f := range found {
		tenant, err := cache.Tenant(c.String("tenant"), f.Manifest)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		s, err := warmer.Apply(ctx, tenant, f.Manifest)
		if s != nil {
			ok = ok && s.OK()
			sums = append(sums, s)
			if c.String("format") == "table" {
				s.Write(c.App.Writer, c.Bool("verbose"))
			}
		}
		if err != nil {
			return cli.Exit(fmt.Sprintf("warm interrupted: %v", err), 2)
		}
	}
	if c.String("format") == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sums); err != nil {
			return err
		}
	}
	if !ok {
		return cli.Exit("", 1)
	}
	return nil
}

// readManifest reads a manifest from a file or an http(s) URL; neither vouches for a tenant.
func readManifest(ctx context.Context, arg string) cache.Found {
	if strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "https://") {
		return cache.Fetch(ctx, nil, arg, manifest.Limits{})
	}
	m, err := manifest.Load(arg, manifest.Limits{})
	return cache.Found{Source: arg, Manifest: m, Err: err}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func lookupCommand() *cli.Command {
	return &cli.Command{
		Name:      "lookup",
		Usage:     "print where the artifact store keeps a tenant's copy of a file, by its sha256",
		ArgsUsage: "sha256:HEX",
		Description: `lookup finds a staged artifact by digest in a tenant's directory of the store and
prints its path, for scripts and init containers on the node: the path is under
STORE/tenants/TENANT, the directory a pod of that tenant mounts. With --verify the file is
read in full and its sha256 checked. The exit status is 1 when the tenant has no intact
copy (a corrupt one is reported and left for the next warm to fetch again).

Example:
  model=$(coldtrace lookup --tenant team-a sha256:9f86d08...)`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tenant", Value: cache.DefaultTenant, Usage: "the `TENANT` whose copy to look up"},
			&cli.StringFlag{Name: "store", Value: "/var/lib/coldtrace/artifacts", Usage: "the artifact store's `DIR`"},
			&cli.Int64Flag{Name: "size", Value: -1, Usage: "the file's expected size in `BYTES` (default: not checked)"},
			&cli.BoolFlag{Name: "verify", Usage: "read the file and check its sha256"},
		},
		Action: func(c *cli.Context) error {
			args, err := interspersed(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return cli.Exit("lookup takes one digest: coldtrace lookup sha256:HEX", 2)
			}
			if _, err := os.Stat(c.String("store")); err != nil {
				return cli.Exit(fmt.Sprintf("no artifact store: %v", err), 1)
			}
			st, err := store.Open(c.String("store"), store.Options{})
			if err != nil {
				return err
			}
			defer st.Close()
			p, err := st.Lookup(c.String("tenant"), args[0], c.Int64("size"), c.Bool("verify"))
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintln(c.App.Writer, p)
			return nil
		},
	}
}
