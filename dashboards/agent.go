package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// ofAgent keeps the series of a process metric that come from coldtrace agents: the
// targets that also export coldtrace_build_info.
const ofAgent = ` and on (job, instance) coldtrace_build_info{` + nodeSel + `}`

// agentHealth is the agent itself: probes, lost events, recordings, traces, resources.
func agentHealth() *dashboard.DashboardBuilder {
	return board("coldtrace-agent", "coldtrace / Agent health",
		"Whether the coldtrace agents work: probes attached, events lost, recordings, traces written, the trace store, the agent's CPU and memory.").
		WithRow(dashboard.NewRowBuilder("Probes and events")).
		WithPanel(single("Probes attached", "eBPF programs attached now, per node.", "short",
			instant(`sum by (node) (coldtrace_probe_attached{`+nodeSel+`})`, "{{node}}"))).
		WithPanel(single("Probes not attached", "eBPF programs that could not attach, per node: the traces lack what they observe (see the probe status).", "short",
			instant(`count by (node) (coldtrace_probe_attached{`+nodeSel+`}) - sum by (node) (coldtrace_probe_attached{`+nodeSel+`})`, "{{node}}"))).
		WithPanel(single("Build", "The coldtrace versions running, and on how many nodes.", "short",
			instant(`count by (version, goversion) (coldtrace_build_info{`+nodeSel+`})`, "{{version}} ({{goversion}})")).Span(12)).
		WithPanel(bars("Probe status", "1: attached, 0: not, per probe, the lowest over the selected nodes.", "short",
			instant(`min by (probe) (coldtrace_probe_attached{`+nodeSel+`})`, "{{probe}}")).Height(16)).
		WithPanel(graph("Lost events", "Kernel events dropped because the ring buffer was full: raise --ring-buffer where this is not 0.", "short",
			query(`sum by (node) (increase(coldtrace_lost_events_total{`+nodeSel+`}[$__rate_interval]))`, "{{node}}"))).
		WithPanel(graph("Recordings", "Containers being recorded (active), and cgroups held from their creation until their container is known (held).", "short",
			query(`sum by (node, state) (coldtrace_recordings{`+nodeSel+`})`, "{{node}} {{state}}"),
			query(`sum by (node) (coldtrace_held_events{`+nodeSel+`})`, "{{node}} held events"))).
		WithRow(dashboard.NewRowBuilder("Traces and resources")).
		WithPanel(graph("Traces written and failed", "Traces written to the data directory, and traces that could not be written, per interval.", "short",
			query(`sum by (node) (increase(coldtrace_traces_written_total{`+nodeSel+`}[$__rate_interval]))`, "{{node}} written"),
			query(`sum by (node) (increase(coldtrace_trace_write_failures_total{`+nodeSel+`}[$__rate_interval]))`, "{{node}} failed"))).
		WithPanel(graph("Trace store", "Bytes of traces in the agent's data directory.", "bytes",
			query(`sum by (node) (coldtrace_trace_store_bytes{`+nodeSel+`})`, "{{node}}"))).
		WithPanel(graph("Agent CPU", "CPU seconds per second the agent uses.", "percentunit",
			query(`rate(process_cpu_seconds_total[$__rate_interval])`+ofAgent, "{{node}} {{instance}}"))).
		WithPanel(graph("Agent memory", "The agent's resident memory.", "bytes",
			query(`process_resident_memory_bytes`+ofAgent, "{{node}} {{instance}}")))
}
