package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultHostsDir is where containerd's CRI plugin conventionally reads each registry's
// hosts.toml (its config_path).
const DefaultHostsDir = "/etc/containerd/certs.d"

// registryAddrs resolves the addresses that a pull from registry host may connect to:
// the host itself (docker.io's registry-1.docker.io) and the servers of its hosts.toml in
// hostsDir (mirrors), each at its port, or at 443 and 80 when it names none. Names are
// looked up now, not when the pull ran; a name that does not resolve is skipped and
// reported in the error.
func registryAddrs(ctx context.Context, host, hostsDir string) (map[netip.AddrPort]bool, error) {
	servers := []string{host}
	if host == "docker.io" {
		servers[0] = "registry-1.docker.io"
	}
	mirrors, err := hostsServers(hostsDir, host)
	servers = append(servers, mirrors...)
	errs := []error{err}
	out := map[netip.AddrPort]bool{}
	for _, s := range servers {
		name, ports, err := serverPorts(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ips, err := lookup(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ip := range ips {
			for _, p := range ports {
				out[netip.AddrPortFrom(ip, p)] = true
			}
		}
	}
	return out, errors.Join(errs...)
}

// hostsServers are the server URLs of the hosts.toml that containerd reads for host in
// hostsDir (hostsDir/host, else hostsDir/_default): its server and the keys of its
// [host."URL"] tables; none when there is no such file.
func hostsServers(hostsDir, host string) ([]string, error) {
	if hostsDir == "" {
		return nil, nil
	}
	var p string
	var data []byte
	for _, dir := range []string{host, "_default"} {
		var err error
		p = filepath.Join(hostsDir, dir, "hosts.toml")
		data, err = os.ReadFile(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if data == nil {
		return nil, nil
	}
	var f struct {
		Server string         `toml:"server"`
		Host   map[string]any `toml:"host"`
	}
	if err := toml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var out []string
	if f.Server != "" {
		out = append(out, f.Server)
	}
	for u := range f.Host {
		out = append(out, u)
	}
	return out, nil
}

// serverPorts splits a registry server, a URL or a bare host[:port], into its host name
// and the ports a connection to it may use.
func serverPorts(s string) (string, []uint16, error) {
	hostport, ports := s, []uint16{443, 80}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", nil, fmt.Errorf("registry server %q: %w", s, err)
		}
		hostport = u.Host
		ports = []uint16{443}
		if u.Scheme == "http" {
			ports = []uint16{80}
		}
	}
	name, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return strings.Trim(hostport, "[]"), ports, nil // no port
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", nil, fmt.Errorf("registry server %q: port %q", s, port)
	}
	return name, []uint16{uint16(p)}, nil
}

// lookup resolves a host name, or parses an IP address.
func lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, err
}
