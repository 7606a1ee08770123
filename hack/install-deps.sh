#!/usr/bin/env bash
# Installs what building and testing coldtrace need on Debian 12 (bookworm), as root.
#
#   hack/install-deps.sh [all|build]
#
#   all    (default) everything: the build set plus what the tests run
#          (containerd, runc, a registry client, Prometheus, strace, fio, ...)
#   build  only what `make generate` and `make build` need
#
# Idempotent: a package that is installed is not installed again, `apt-get update` runs only
# when the package lists lack something, and Go is left alone when the `go` on PATH is at
# least the version go.mod asks for.
#
# It needs nothing but Debian's apt repositories and the Go module proxy. Debian 12 ships
# Go 1.19 only, so a newer Go is bootstrapped: Debian's Go 1.19 fetches the official
# toolchain module (golang.org/toolchain@v0.0.1-goX.Y.Z.linux-ARCH) through the module proxy
# (go's own default, or GOPROXY from the environment), and the toolchain is copied out of
# the module cache into $GO_PREFIX/go, with $GO_PREFIX/bin/go linked to it.
#
# Environment:
#   GO_PREFIX   where Go goes (default /usr/local: /usr/local/go, /usr/local/bin/go)
#   GO_VERSION  the Go version to require (default: go.mod's toolchain or go line)
#   FORCE_GO=1  install Go even if a new enough one is found

set -euo pipefail

# --- the packages: the one place that lists them --------------------------------------------

# `make generate` (bpf2go runs clang-19 and llvm-strip-19 over libbpf's headers), `make build`
# (git describe gives the version), and the tools to look at BPF objects.
BUILD_PACKAGES=(
	ca-certificates git make gcc libc6-dev
	clang-19 llvm-19 libbpf-dev bpftool
)

# What the tests run or start themselves under temporary directories.
TEST_PACKAGES=(
	strace python3 vmtouch fio
	containerd runc busybox-static containernetworking-plugins stargz-snapshotter skopeo
	prometheus
	iproute2 iptables kmod procps util-linux
	shellcheck
)

# --- helpers --------------------------------------------------------------------------------

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-all}
GO_PREFIX=${GO_PREFIX:-/usr/local}
BOOTSTRAP_PACKAGE=golang-1.19-go # Debian 12's Go, without putting an old /usr/bin/go on PATH
BOOTSTRAP_GO=/usr/lib/go-1.19/bin/go

case $MODE in
all) PACKAGES=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
build) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
-h | --help | help)
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*) die "unknown mode '$MODE' (want all or build)" ;;
esac

[[ $EUID -eq 0 ]] || die "run as root"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -qq --no-install-recommends -o Dpkg::Use-Pty=0
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

CLEANUP=()
cleanup() {
	local c
	for c in "${CLEANUP[@]}"; do eval "$c" || true; done
}
trap cleanup EXIT

# Installing containerd or prometheus must not start their services: the tests start their
# own under temporary directories. policy-rc.d is what invoke-rc.d and deb-systemd-invoke ask.
no_service_starts() {
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		CLEANUP+=("rm -f /usr/sbin/policy-rc.d")
	fi
}

installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

APT_UPDATED=0
apt_update() {
	((APT_UPDATED)) && return 0
	log "apt-get update"
	quietly apt-get update -qq || die "apt-get update failed"
	APT_UPDATED=1
}

apt_install() {
	local missing=() p
	for p in "$@"; do installed "$p" || missing+=("$p"); done
	((${#missing[@]})) || return 0
	# Update the lists only when they don't know a package we want.
	for p in "${missing[@]}"; do
		if ! apt-cache show "$p" >/dev/null 2>&1; then
			apt_update
			break
		fi
	done
	no_service_starts
	log "apt-get install ${missing[*]}"
	if ! quietly apt-get install "${APT_OPTS[@]}" "${missing[@]}"; then
		# Stale lists point at files the mirror no longer has: update once and retry.
		((APT_UPDATED)) && die "apt-get install failed"
		apt_update
		quietly apt-get install "${APT_OPTS[@]}" "${missing[@]}" || die "apt-get install failed"
	fi
}

# quietly CMD...: run CMD with its output kept in a file, shown only if it fails.
quietly() {
	local out rc=0
	out=$(mktemp)
	"$@" >"$out" 2>&1 || rc=$?
	if ((rc)); then
		tail -n 50 "$out" >&2
	fi
	rm -f "$out"
	return "$rc"
}

# version_ge A B: A >= B, for Go versions like 1.26.8 or 1.27rc1.
version_ge() {
	[[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$2" ]]
}

# The Go version go.mod asks for: the higher of its toolchain and go lines. Since Go 1.21 a
# release is named 1.N.0, so a bare 1.N means 1.N.0.
wanted_go_version() {
	local go_line toolchain v
	go_line=$(awk '$1 == "go" { print $2; exit }' "$ROOT/go.mod")
	toolchain=$(awk '$1 == "toolchain" { sub(/^go/, "", $2); print $2; exit }' "$ROOT/go.mod")
	[[ -n $go_line ]] || die "no go line in $ROOT/go.mod"
	v=$go_line
	if [[ -n $toolchain ]] && ! version_ge "$v" "$toolchain"; then v=$toolchain; fi
	if [[ $v =~ ^1\.([0-9]+)$ ]] && ((BASH_REMATCH[1] >= 21)); then v=$v.0; fi
	printf '%s\n' "$v"
}

# The version of the Go at path $1, or nothing. GOTOOLCHAIN=local keeps a newer go from
# switching toolchains; running in / keeps it away from go.mod.
go_version_of() {
	[[ -x $1 ]] || return 0
	(cd / && GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) | sed -n '1s/^go\([^ ]*\).*/\1/p'
}

install_go() {
	local want=$1 arch tmp json dir stage dest
	arch=$(dpkg --print-architecture)
	case $arch in amd64 | arm64 | 386 | ppc64el | s390x | riscv64) ;; *) die "no Go toolchain for $arch" ;; esac
	[[ $arch == ppc64el ]] && arch=ppc64le

	apt_install "$BOOTSTRAP_PACKAGE" ca-certificates
	[[ -x $BOOTSTRAP_GO ]] || die "$BOOTSTRAP_GO missing after installing $BOOTSTRAP_PACKAGE"

	tmp=$(mktemp -d)
	# The module cache is read-only; the bootstrap Go clears it before the folder goes.
	CLEANUP+=("env -u GOFLAGS GOPATH='$tmp/gopath' GOMODCACHE='$tmp/gopath/pkg/mod' GOCACHE='$tmp/cache' '$BOOTSTRAP_GO' clean -modcache >/dev/null 2>&1; rm -rf '$tmp'")

	log "fetching golang.org/toolchain@v0.0.1-go$want.linux-$arch with Debian's $("$BOOTSTRAP_GO" env GOVERSION)"
	json=$tmp/download.json
	if ! (cd "$tmp" && env -u GOROOT -u GOFLAGS -u GOBIN \
		GOPATH="$tmp/gopath" GOMODCACHE="$tmp/gopath/pkg/mod" GOCACHE="$tmp/cache" \
		GO111MODULE=on GOTOOLCHAIN=local \
		"$BOOTSTRAP_GO" mod download -json "golang.org/toolchain@v0.0.1-go$want.linux-$arch" >"$json"); then
		cat "$json" >&2 || true
		die "could not download Go $want"
	fi
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$json")
	[[ -n $dir && -d $dir ]] || die "no module directory in: $(cat "$json")"
	[[ -f $dir/bin/go ]] || die "$dir has no bin/go"

	# Copy it out of the cache beside its destination, give back the permissions that the
	# module zip does not keep, check it runs, then swap it in.
	dest=$GO_PREFIX/go
	mkdir -p "$GO_PREFIX/bin"
	stage=$(mktemp -d "$GO_PREFIX/.go-install.XXXXXX")
	CLEANUP+=("rm -rf '$stage'")
	cp -R "$dir/." "$stage/"
	chmod -R u+w,go-w,a+rX "$stage"
	find "$stage/bin" "$stage/pkg/tool" -type f -exec chmod a+x {} +
	find "$stage" -type f \( -name '*.bash' -o -name '*.sh' -o -name '*_exec' \) -exec chmod a+x {} +
	[[ $(go_version_of "$stage/bin/go") == "$want" ]] || die "the downloaded Go does not run as go$want"

	rm -rf "$dest"
	mv "$stage" "$dest"
	ln -sfn "$dest/bin/go" "$GO_PREFIX/bin/go"
	ln -sfn "$dest/bin/gofmt" "$GO_PREFIX/bin/gofmt"
	log "installed Go $want in $dest ($GO_PREFIX/bin/go)"
}

ensure_go() {
	local want path_go have prefix_have
	want=${GO_VERSION:-$(wanted_go_version)}
	path_go=$(command -v go || true)
	have=$(go_version_of "$path_go")
	if [[ ${FORCE_GO:-} != 1 && -n $have ]] && version_ge "$have" "$want"; then
		log "Go $have at $path_go (go.mod wants $want)"
		return 0
	fi
	prefix_have=$(go_version_of "$GO_PREFIX/go/bin/go")
	if [[ ${FORCE_GO:-} != 1 && -n $prefix_have ]] && version_ge "$prefix_have" "$want"; then
		ln -sfn "$GO_PREFIX/go/bin/go" "$GO_PREFIX/bin/go"
		ln -sfn "$GO_PREFIX/go/bin/gofmt" "$GO_PREFIX/bin/gofmt"
		log "Go $prefix_have at $GO_PREFIX/go${have:+ (the go on PATH, $path_go, is $have)}"
	else
		log "need Go >= $want; ${have:+found $have at $path_go}${have:-no go on PATH}"
		install_go "$want"
	fi
	path_go=$(command -v go || true)
	have=$(go_version_of "$path_go")
	if [[ -z $have ]] || ! version_ge "$have" "$want"; then
		log "note: put $GO_PREFIX/go/bin (or $GO_PREFIX/bin) first in PATH: the go on PATH is ${path_go:-missing}"
	fi
}

# --- main -----------------------------------------------------------------------------------

apt_install "${PACKAGES[@]}"
ensure_go
if [[ $MODE == all ]]; then
	# Jaeger, the OTLP backend of the export tests: a Go tool of its own module (hack/jaeger,
	# kept out of coldtrace's go.mod), built once here into go's cache, where the tests find
	# it with `go tool -n`. Several minutes on 2 CPUs.
	log "building the jaeger tool (hack/jaeger)"
	"$(command -v go || echo "$GO_PREFIX/bin/go")" -C "$(dirname "${BASH_SOURCE[0]}")/jaeger" tool -n jaeger >/dev/null
	# SeaweedFS, the S3-compatible server of the trace-store tests: a Go tool of its own
	# module (hack/seaweedfs, kept out of coldtrace's go.mod), built once here into go's
	# cache, where the tests find it with `go tool -n`. Long on 2 CPUs (see docs/fleet.md).
	log "building the weed tool (hack/seaweedfs)"
	"$(command -v go || echo "$GO_PREFIX/bin/go")" -C "$ROOT/hack/seaweedfs" tool -n weed >/dev/null
fi
log "done ($MODE)"
