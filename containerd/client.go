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
	c, err := client.New(address, client.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	return &Client{c: c, namespace: namespace, platform: platforms.Default()}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }
