// Package doccheck has no code: its tests keep the README and docs/ true
// to the repository. Every make target the documents name exists (and the
// project's named targets are documented), every kvd and kvctl flag is in
// the README, every link between the documents resolves, down to the
// heading it points at, and docs/README.md lists every document. The
// README's API and error tables are checked against the code in package
// api, which owns them (api/readme_test.go).
package doccheck
