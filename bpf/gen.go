// Package bpf holds coldtrace's eBPF programs, the Go bindings that bpf2go generates for them
// (committed; `make generate` rebuilds them with Debian's clang-19), and the loader that
// attaches each program and reports what could not be attached.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type hdr -type event_fork -type event_exec -type event_exit -type event_open -type event_read -type event_mmap -type event_fault -type event_cache_miss -type event_conn -type event_sock -type event_listen -type event_ioctl -type event_call -type event_chdir -type event_payload -type event_write -type event_cgroup -type event_type coldtrace coldtrace.bpf.c -- -I/usr/include
