// Package deploy has no code: it holds what an operator deploys next to
// dialkv (deploy/grafana: a Grafana dashboard; deploy/prometheus: a scrape
// config and alert rules with their promtool unit tests), and its test
// proves that they work against the real thing. Debian's Prometheus scrapes
// a running 3-node cluster under load, every dashboard query and every
// alert expression returns data from it, a killed node raises its alert,
// and promtool checks the rules and runs their unit tests.
package deploy
