package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/recorder"
)

// recordImage records the cold start of a container of --image.
func recordImage(c *cli.Context, ring int, format string) error {
	switch {
	case c.Bool("example"):
		return errors.New("--example and --image exclude each other")
	case c.Bool("keep-running"):
		return errors.New("--keep-running is not supported with --image: the container is removed at the end")
	}
	mounts, err := parseMounts(c.StringSlice("mount"))
	if err != nil {
		return err
	}
	for _, e := range c.StringSlice("env") {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	t, err := recorder.RecordImage(ctx, recorder.ImageOptions{
		Image:           c.String("image"),
		Address:         c.String("containerd"),
		Namespace:       c.String("namespace"),
		PlainHTTP:       c.Bool("plain-http"),
		HostsDir:        c.String("hosts-dir"),
		Fresh:           c.Bool("fresh"),
		Args:            c.Args().Slice(),
		HostNetwork:     c.Bool("net-host"),
		Env:             c.StringSlice("env"),
		Mounts:          mounts,
		Stdout:          c.String("container-log"),
		Stderr:          c.String("container-log"),
		Timeout:         c.Duration("timeout"),
		RingBufferBytes: ring,
		DevicePatterns:  c.StringSlice("device-pattern"),
		Log:             os.Stderr,
	})
	if err != nil {
		return err
	}
	return output(c, t, format)
}

// parseMounts reads --mount SRC:DST[:ro|rw] into bind mounts. SRC must exist: runc would
// otherwise fail the create with a less clear message.
func parseMounts(args []string) ([]specs.Mount, error) {
	var out []specs.Mount
	for _, a := range args {
		parts := strings.Split(a, ":")
		mode := "ro"
		if len(parts) == 3 {
			mode = parts[2]
		}
		if len(parts) < 2 || len(parts) > 3 || (mode != "ro" && mode != "rw") {
			return nil, fmt.Errorf("--mount %q: want SRC:DST[:ro|rw]", a)
		}
		src, dst := parts[0], parts[1]
		if !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
			return nil, fmt.Errorf("--mount %q: SRC and DST must be absolute paths", a)
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("--mount %q: %w", a, err)
		}
		out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", mode}})
	}
	return out, nil
}
