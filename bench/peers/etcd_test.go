package main

import (
	"strings"
	"testing"
)

// The etcd counters sum a metric's samples over their labels, whatever
// the label values hold.
func TestParseMetrics(t *testing.T) {
	text := `# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
etcd_server_proposals_committed_total 1.234e+06
process_cpu_seconds_total 2.5
odd_label{path="a} b"} 7 1700000000000
`
	got, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"grpc_server_msg_received_total":        15,
		"etcd_server_proposals_committed_total": 1234000,
		"process_cpu_seconds_total":             2.5,
		"odd_label":                             7,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("broken{a=\"b\" 1\n")); err == nil {
		t.Error("a line without its closing brace parsed")
	}
}

func TestMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:2379":         "http://127.0.0.1:2379/metrics",
		"http://127.0.0.1:2379":  "http://127.0.0.1:2379/metrics",
		"http://127.0.0.1:2379/": "http://127.0.0.1:2379/metrics",
	} {
		if got := metricsURL(in); got != want {
			t.Errorf("metricsURL(%q) = %q, want %q", in, got, want)
		}
	}
}
