// Package deploy holds the Helm chart of the node agent (deploy/coldtrace) and its tests:
// rendered with the Helm SDK, every object decoded strictly into its Kubernetes type, the
// schema's refusals, the capabilities granted against those the agent checks for, and the
// agent run through containerd's CRI with the chart's security context.
package deploy
