package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

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
