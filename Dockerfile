# coldtrace: the static binary on an empty base, for the DaemonSet (`coldtrace agent`,
# deploy/coldtrace).
#
#   docker build -t coldtrace:dev --build-arg VERSION="$(git describe --tags --always --dirty)" .
#
# The builder installs Go and the build tools with hack/install-deps.sh (Debian's packages
# and the Go module proxy only) and runs `make build` (CGO_ENABLED=0, -trimpath). The BPF
# objects are the committed ones in bpf/. The agent execs nothing; it needs uid 0 with its
# capabilities, the host's BTF, tracefs, cgroups and containerd, which the chart mounts
# (docs/deploy.md).

ARG DEBIAN=debian:bookworm

FROM ${DEBIAN} AS build
WORKDIR /src
# Tools first, then modules, then the source, so that each layer is reused while its
# inputs stay the same.
COPY go.mod go.sum ./
COPY hack/install-deps.sh hack/
RUN bash hack/install-deps.sh build && rm -rf /var/lib/apt/lists/*
# The version comes from VERSION or git describe, not from VCS stamping (a worktree's .git
# does not resolve inside the build).
ENV PATH=/usr/local/go/bin:$PATH GOFLAGS=-buildvcs=false
RUN go mod download
COPY . .
ARG VERSION=
RUN if [ -n "$VERSION" ]; then make build VERSION="$VERSION"; else make build; fi

# The binary is static and execs nothing: it runs on an empty base, with only the root
# CAs beside it. The chart's least-privilege test (deploy/cri_test.go, agentImage)
# assembles the same image without Docker and runs it through containerd's CRI.
FROM scratch
ARG VERSION=
LABEL org.opencontainers.image.title="coldtrace" \
	org.opencontainers.image.description="Traces the cold start of GPU inference containers with eBPF, advises, and warms the next node" \
	org.opencontainers.image.source="https://github.com/coldtrace/coldtrace" \
	org.opencontainers.image.version="${VERSION}"
# Root CAs for the agent's own HTTPS clients.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/coldtrace /usr/local/bin/coldtrace
ENTRYPOINT ["/usr/local/bin/coldtrace"]
CMD ["agent"]
