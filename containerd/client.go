// Package containerd is the collector's thin client over containerd: it pulls an image with
// per-layer timing, creates and starts a container, and tells where the container lives in
// the kernel (its cgroup) and on disk (its overlay layers), so that kernel events can be tied
// to the container and files to image layers.
//
// It uses the containerd 2.x Go client, tested against Debian's containerd 1.6 daemon; the
// same client serves 1.7 and 2.x daemons.
package containerd

import (
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/platforms"
)

// DefaultSnapshotter is the snapshotter of Pull and Create; LayerOf understands its mounts.
const DefaultSnapshotter = "overlayfs"

// Client talks to one containerd daemon in one namespace.
type Client struct {
	c         *client.Client
	namespace string
	platform  platforms.MatchComparer
}

// New connects to the daemon at address (its gRPC socket); namespace is the containerd
// namespace to work in ("default" for ctr, "k8s.io" for the kubelet), for every call
// whose context names none.
func New(address, namespace string) (*Client, error) {
	c, err := Dial(address, namespace)
	if err != nil {
		return nil, err
	}
	return &Client{c: c, namespace: namespace, platform: platforms.Default()}, nil
}

// Dial connects containerd's own client to the daemon's socket at address, a path, in
// namespace. A relative path is taken from the working directory: the client makes the
// address a URL, unix://ADDRESS, in which the first component of a relative path would
// be a host ("invalid (non-empty) authority").
func Dial(address, namespace string) (*client.Client, error) {
	abs, err := filepath.Abs(address)
	if err != nil {
		return nil, fmt.Errorf("containerd socket %s: %w", address, err)
	}
	c, err := client.New(abs, client.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }
