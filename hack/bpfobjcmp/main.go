// Command bpfobjcmp tells whether two BPF objects are the same program: the same maps,
// variables and instructions, CO-RE relocations included. clang-19 does not emit
// byte-identical BTF from run to run (type and string order vary), so `make
// check-generate` compares objects with this instead of byte for byte.
//
//	go run ./hack/bpfobjcmp OLD.o NEW.o
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: bpfobjcmp OLD.o NEW.o")
		os.Exit(2)
	}
	a, err := describe(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	b, err := describe(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if a == b {
		return
	}
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			fmt.Fprintf(os.Stderr, "%s and %s differ:\n- %s\n+ %s\n", os.Args[1], os.Args[2], al[i], bl[i])
			break
		}
	}
	os.Exit(1)
}

// describe renders what the object does, in an order that does not depend on BTF layout.
func describe(path string) (string, error) {
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return "", err
	}
	var out []string
	for name, m := range spec.Maps {
		out = append(out, fmt.Sprintf("map %s %s key=%d value=%d max=%d flags=%d", name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags))
	}
	for name, v := range spec.Variables {
		out = append(out, fmt.Sprintf("var %s %s size=%d", name, v.SectionName, v.Size()))
	}
	sort.Strings(out)
	var progs []string
	for name := range spec.Programs {
		progs = append(progs, name)
	}
	sort.Strings(progs)
	for _, name := range progs {
		p := spec.Programs[name]
		out = append(out, fmt.Sprintf("prog %s %s %s %s", name, p.Type, p.AttachType, p.SectionName))
		for _, line := range strings.Split(fmt.Sprintf("%v", p.Instructions), "\n") {
			out = append(out, name+": "+line)
		}
	}
	return strings.Join(out, "\n"), nil
}
