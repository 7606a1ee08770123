// Command gen writes coldtrace's Grafana dashboards as JSON into the directory it is
// given: `make dashboards` runs it on dashboards/.
package main

import (
	"fmt"
	"os"

	"github.com/coldtrace/coldtrace/dashboards"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen DIR")
		os.Exit(2)
	}
	if err := dashboards.Write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
