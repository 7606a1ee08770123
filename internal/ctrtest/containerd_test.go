package ctrtest

import (
	"context"
	"testing"
)

func TestStartContainerd(t *testing.T) {
	c := StartContainerd(t)
	v, err := c.Client(t).Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s at %s", v.Version, c.Address)
}
