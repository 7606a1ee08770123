package main

import (
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/manifest"
)

// registryAuth is the registries' credentials: docker's config and credential helpers.
var registryAuth = remote.WithAuthFromKeychain(authn.DefaultKeychain)

func manifestCommand() *cli.Command {
	return &cli.Command{
		Name:  "manifest",
		Usage: "store prefetch manifests in the registry, attached to their image",
		Description: `A prefetch manifest pushed to the registry is an OCI artifact (type ` + manifest.ArtifactType + `)
whose subject is the image: every node that runs the image finds it through the
registry's referrers API, or the referrers tag (sha256-<hex>) where the registry has no
such API. Pull takes the newest attached to the image.`,
		Subcommands: []*cli.Command{
			{
				Name:      "push",
				Usage:     "attach a manifest to an image",
				ArgsUsage: "MANIFEST REGISTRY/REPO@sha256:DIGEST",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return cli.Exit("usage: coldtrace manifest push MANIFEST REGISTRY/REPO@sha256:DIGEST", 2)
					}
					m, err := manifest.Load(c.Args().Get(0), manifest.Limits{})
					if err != nil {
						return err
					}
					return pushManifest(c, m, c.Args().Get(1))
				},
			},
			{
				Name:      "pull",
				Usage:     "fetch the newest manifest attached to an image",
				ArgsUsage: "REGISTRY/REPO@sha256:DIGEST",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write it to `FILE` (.yaml or .json; default: YAML to standard output)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("usage: coldtrace manifest pull REGISTRY/REPO@sha256:DIGEST [-o FILE]", 2)
					}
					m, at, err := manifest.Pull(c.Context, c.Args().Get(0), manifest.Limits{}, registryAuth)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.ErrWriter, "pulled %s\n", at)
					if out := c.String("output"); out != "" {
						return m.WriteFile(out)
					}
					return m.WriteYAML(c.App.Writer)
				},
			},
		},
	}
}

func pushManifest(c *cli.Context, m *manifest.Manifest, image string) error {
	at, err := manifest.Push(c.Context, image, m, time.Now(), registryAuth)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "pushed %s, attached to %s\n", at, image)
	return nil
}
