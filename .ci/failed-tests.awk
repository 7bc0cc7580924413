# Prints the whole `go test -v` output of every top-level test that failed
# (or was still running when the binary died), so that a CI log keeps the
# node logs and goroutine dumps that the filtered view leaves out.
function flush(failed) {
	if (failed && block != "") printf "%s", block
	block = ""; name = ""
}
/^=== RUN   [^ \/]+$/ { flush(0); name = $3; block = $0 "\n"; next }
name != "" {
	block = block $0 "\n"
	if ($0 ~ "^--- FAIL: " name " ") flush(1)
	else if ($0 ~ "^--- (PASS|SKIP): " name " ") flush(0)
}
END { flush(1) }
