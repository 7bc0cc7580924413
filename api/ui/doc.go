// Package ui is kvd's read-only web console: static HTML, JavaScript and
// CSS embedded in the binary and served at /ui on the HTTP port. The page
// draws the cluster from the node's own JSON API (/v1/cluster/ranges,
// /v1/cluster/status, /v1/cluster/members) and request rates from its
// /metrics text, refreshing every 2 s. It has no build step and fetches
// nothing from anywhere but the node that served it.
package ui
