# coldtrace — build, test and CI entry points. `make help` lists them.
#
# Tests load BPF programs and start containerd and Prometheus: run `make test` as root on
# a kernel with BTF. With CI=true, a test that cannot run here fails instead of skipping.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BINARY    ?= coldtrace
PKG       := ./cmd/coldtrace
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin

# Packages for `make test` / `make bench` / `make fuzz`.
PKGS      ?= ./...
BENCH_PKGS ?= $(PKGS)
BENCH     ?= .
BENCHTIME ?= 1s
BENCHFLAGS ?= -benchmem
ADVISE_N  ?= 10000
# One package at a time: the tests measure timings (pull rates, phase boundaries) and
# share the kernel's probes, so parallel packages would make them noisy.
TESTFLAGS ?= -p 1
FUZZTIME  ?= 10s

SHELL_SCRIPTS := hack/install-deps.sh .ci/run

# The reference cold-start benchmark's sizes (hack/benchcoldstart; docs/benchmark.md).
COLDSTART_IMAGE_MIB ?= 1536
COLDSTART_SHARD_MIB ?= 512
COLDSTART_LINK_MIBPS ?= 100
COLDSTART_RUNS ?= 5
COLDSTART_CURVE_MIB ?= 512,1024,2048
COLDSTART_OUT ?= bench-coldstart-out

.PHONY: help generate check-generate dashboards check-dashboards build test bench bench-overhead bench-coldstart bench-advise lint fuzz install clean

help: ## list the targets
	@echo 'usage: make TARGET [VAR=value ...]'
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-15s %s\n", $$1, $$2 }'
	@echo 'variables: PKGS=$(PKGS) BENCH_PKGS=$(BENCH_PKGS) BENCHTIME=$(BENCHTIME) FUZZTIME=$(FUZZTIME) VERSION=$(VERSION)'

generate: ## regenerate the BPF objects and Go bindings in bpf/ (bpf2go, clang-19); commit them
	$(GO) generate ./bpf

# clang-19 does not emit byte-identical BTF from run to run, so the object is compared by
# what it does (hack/bpfobjcmp: maps, variables, instructions and CO-RE relocations) and
# every other file in bpf/ byte for byte.
check-generate: ## fail if a fresh generate differs from the committed bpf/ files
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	for o in bpf/*.o; do cp "$$o" "$$tmp/"; done; \
	$(GO) generate ./bpf; \
	for o in bpf/*.o; do \
		if ! $(GO) run ./hack/bpfobjcmp "$$tmp/$$(basename "$$o")" "$$o"; then \
			echo "$$o differs from a fresh \`make generate\`: run it and commit the result"; exit 1; \
		fi; \
		cp "$$tmp/$$(basename "$$o")" "$$o"; \
	done; \
	if [[ -n "$$(git status --porcelain -- bpf/)" ]]; then \
		echo 'bpf/ differs from a fresh `make generate`:'; \
		git status --porcelain -- bpf/; \
		git --no-pager diff --stat -- bpf/; \
		echo 'run `make generate` and commit the result'; \
		exit 1; \
	fi
	@echo 'bpf/ matches a fresh generate'

dashboards: ## regenerate the Grafana dashboards' JSON in dashboards/ from their Go code; commit it
	$(GO) run ./dashboards/gen dashboards

check-dashboards: ## fail if a fresh `make dashboards` differs from the committed dashboards/*.json
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) run ./dashboards/gen "$$tmp"; \
	if ! diff -r -x '*.go' -x gen -x staticcheck.conf dashboards "$$tmp" >/dev/null || [[ -n "$$(git status --porcelain -- 'dashboards/*.json')" ]]; then \
		diff -ru -x '*.go' -x gen -x staticcheck.conf dashboards "$$tmp" | head -40 || true; \
		git status --porcelain -- 'dashboards/*.json'; \
		echo 'dashboards/ differs from a fresh `make dashboards`: run it and commit the result'; exit 1; \
	fi
	@echo 'dashboards/ matches a fresh generate'

build: ## build the static binary ./coldtrace
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BINARY) $(PKG)

test: ## run every test (as root; CI=true turns skips for missing root/BPF/tools into failures)
	$(GO) test -count=1 $(TESTFLAGS) $(PKGS)

bench: ## run the benchmarks (BENCH_PKGS, BENCH, BENCHTIME)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) $(BENCHFLAGS) $(BENCH_PKGS)

bench-coldstart: ## the scale-out cold start of an LLM server under six strategies (root; COLDSTART_IMAGE_MIB, _SHARD_MIB, _LINK_MIBPS, _RUNS, _CURVE_MIB, _OUT)
	mkdir -p $(COLDSTART_OUT)
	nice $(GO) test -count=1 -timeout 0 -v -run '^TestBenchColdStart$$' ./hack/benchcoldstart -args \
		-image-mib $(COLDSTART_IMAGE_MIB) -shard-mib $(COLDSTART_SHARD_MIB) -link-mibps $(COLDSTART_LINK_MIBPS) \
		-runs $(COLDSTART_RUNS) -curve-mib '$(COLDSTART_CURVE_MIB)' -out $(abspath $(COLDSTART_OUT))

# The overhead bench takes minutes: its file is built only with the tag overhead.
PAIRS ?= 7
bench-overhead: ## what recording costs the workloads and the node, traced vs untraced (docs/overhead.md; PAIRS)
	$(GO) test -tags overhead -count=1 -timeout 60m -run '^$$' -bench Overhead -benchtime 1x ./hack/benchoverhead -args -pairs $(PAIRS)

bench-advise: ## advise over ADVISE_N (10000) traces jittered from 3 real ones (needs root and BPF): time and peak memory
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	$(GO) build -o $$dir/coldtrace $(PKG); $(GO) build -o $$dir/jitter ./hack/jitter; \
	for i in 1 2 3; do $$dir/coldtrace record --example -o $$dir/seed$$i.json.gz >/dev/null; done; \
	$$dir/jitter -n $(ADVISE_N) -o $$dir/traces $$dir/seed*.json.gz; \
	echo "advise over $(ADVISE_N) traces (file://):"; \
	/usr/bin/time -f '  %e s elapsed, %U s user CPU, %M KiB peak RSS' $$dir/coldtrace advise file://$$dir/traces -o $$dir/m.yaml >/dev/null

# staticcheck (a go.mod tool, so CI needs nothing installed) with its default checks: the
# bugs and simplifications vet does not catch (unused code, values never used, deprecated
# calls, impossible comparisons), without the style checks.
lint: ## gofmt, go vet, staticcheck, and shellcheck where installed
	@files="$$(git ls-files --cached --others --exclude-standard -- '*.go' | grep -v '/testdata/' || true)"; \
	out="$$([[ -z "$$files" ]] || gofmt -l $$files)"; \
	if [[ -n "$$out" ]]; then echo 'gofmt -l: these files need gofmt -w:'; echo "$$out"; exit 1; fi; \
	echo 'gofmt: ok'
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@if command -v shellcheck >/dev/null; then \
		echo shellcheck $(SHELL_SCRIPTS); shellcheck $(SHELL_SCRIPTS); \
	else echo 'shellcheck not installed: skipped'; fi

fuzz: ## run each Fuzz* target of PKGS for FUZZTIME (default 10s), one after another
	@list="$$($(GO) test -list '^Fuzz' $(PKGS))"; \
	targets="$$(awk '/^Fuzz/ { names = names " " $$1; next } \
		/^ok / { n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2, a[i]; names = "" }' <<<"$$list")"; \
	if [[ -z "$$targets" ]]; then echo 'no Fuzz targets'; exit 0; fi; \
	while read -r pkg target; do \
		echo "== fuzz $$pkg $$target ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" </dev/null; \
	done <<<"$$targets"

install: build ## install the binary into $(BINDIR) (PREFIX=/usr/local)
	install -D -m 0755 $(BINARY) $(DESTDIR)$(BINDIR)/$(BINARY)

clean: ## remove build outputs and the test and fuzz caches
	rm -f $(BINARY) *.test *.out
	$(GO) clean -testcache -fuzzcache
