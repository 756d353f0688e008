package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// stats counts events per kind; served on /metrics in the Prometheus text format so the
// benchmarks read the peer as they read crbridge.
type stats struct {
	observed  [kinds]atomic.Int64
	published [kinds]atomic.Int64
	failed    [kinds]atomic.Int64
	synced    atomic.Bool
}

// settle records the broker's verdict on one event.
func (s *stats) settle(k kind, err error) {
	if err != nil {
		s.failed[k].Add(1)
		return
	}
	s.published[k].Add(1)
}

func (s *stats) total(c *[kinds]atomic.Int64) int64 {
	var n int64
	for k := range c {
		n += c[k].Load()
	}
	return n
}

func (s *stats) write(w io.Writer) {
	series := []struct {
		name, help string
		c          *[kinds]atomic.Int64
	}{
		{"peer_events_observed_total", "Informer notifications, by type.", &s.observed},
		{"peer_events_published_total", "Events the broker acknowledged, by type.", &s.published},
		{"peer_events_failed_total", "Events the broker refused or that timed out, by type; not retried.", &s.failed},
	}
	for _, m := range series {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", m.name, m.help, m.name)
		for k := kind(0); k < kinds; k++ {
			fmt.Fprintf(w, "%s{type=%q} %d\n", m.name, k.String(), m.c[k].Load())
		}
	}
}

// summary is the line printed at exit.
func (s *stats) summary() string {
	return fmt.Sprintf("totals observed=%d published=%d failed=%d",
		s.total(&s.observed), s.total(&s.published), s.total(&s.failed))
}

// serve answers /metrics, and /readyz with 200 once the informer's initial list is synced.
func (s *stats) serve(l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.write(w)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.synced.Load() {
			http.Error(w, "informer not synced", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return http.Serve(l, mux)
}
