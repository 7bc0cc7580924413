// Package logadapt lets libraries that log through hashicorp/go-hclog
// (raft, raft-wal) write to the node's log/slog logger, so one node has one
// log with one set of attributes.
package logadapt

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// HCLog returns an hclog.Logger that writes to l. Raft's Info chatter
// (heartbeat timeouts, elections) is kept at Info; its Debug and Trace
// only appear when l is enabled for Debug.
func HCLog(l *slog.Logger) hclog.Logger {
	return &hcl{l: l}
}

type hcl struct {
	l    *slog.Logger
	name string
}

func level(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *hcl) Log(lv hclog.Level, msg string, args ...interface{}) {
	h.l.Log(context.Background(), level(lv), msg, args...)
}
func (h *hcl) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }
func (h *hcl) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }
func (h *hcl) Info(msg string, args ...interface{})  { h.Log(hclog.Info, msg, args...) }
func (h *hcl) Warn(msg string, args ...interface{})  { h.Log(hclog.Warn, msg, args...) }
func (h *hcl) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }

func (h *hcl) enabled(lv slog.Level) bool { return h.l.Enabled(context.Background(), lv) }
func (h *hcl) IsTrace() bool              { return h.enabled(slog.LevelDebug - 4) }
func (h *hcl) IsDebug() bool              { return h.enabled(slog.LevelDebug) }
func (h *hcl) IsInfo() bool               { return h.enabled(slog.LevelInfo) }
func (h *hcl) IsWarn() bool               { return h.enabled(slog.LevelWarn) }
func (h *hcl) IsError() bool              { return h.enabled(slog.LevelError) }

func (h *hcl) ImpliedArgs() []interface{} { return nil }
func (h *hcl) With(args ...interface{}) hclog.Logger {
	return &hcl{l: h.l.With(args...), name: h.name}
}
func (h *hcl) Name() string { return h.name }
func (h *hcl) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return &hcl{l: h.l.With("component", name), name: name}
}
func (h *hcl) ResetNamed(name string) hclog.Logger {
	return &hcl{l: h.l.With("component", name), name: name}
}
func (h *hcl) SetLevel(hclog.Level) {}
func (h *hcl) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}
func (h *hcl) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.l.Handler(), slog.LevelInfo)
}
func (h *hcl) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(nil).Writer()
}
