module github.com/coldtrace/coldtrace

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	go.yaml.in/yaml/v2 v2.4.2
	golang.org/x/sys v0.48.0
	gonum.org/v1/gonum v0.17.0
	sigs.k8s.io/yaml v1.6.0
)

require golang.org/x/net v0.59.0 // indirect
