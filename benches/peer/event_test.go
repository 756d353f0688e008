package main

import (
	"encoding/json"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestEventEnvelope(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "bench.crbridge.io/v1",
		"kind":       "BenchWidget",
		"metadata":   map[string]interface{}{"name": "w.1", "namespace": "ns"},
	}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := newEvent(updated, "https://h/apis/bench.crbridge.io/v1/benchwidgets", obj, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newEvent(updated, "s", obj, now)
	var got envelope
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	var other envelope
	_ = json.Unmarshal(b.body, &other)
	if got.ID == "" || got.ID == other.ID {
		t.Errorf("ids %q and %q: want random, distinct ids", got.ID, other.ID)
	}
	if got.Type != "io.crbridge.peer.resource.updated" || got.Data.Type != "updated" ||
		got.Subject != "ns/w.1" || got.Time != "2026-01-02T03:04:05Z" {
		t.Errorf("unexpected envelope %+v", got)
	}
	var back map[string]interface{}
	if err := json.Unmarshal(got.Data.Object, &back); err != nil || back["kind"] != "BenchWidget" {
		t.Errorf("data.object = %s (%v)", got.Data.Object, err)
	}
	if s := a.subject("p"); s != "p.ns.w_1" {
		t.Errorf("subject = %q", s)
	}
	if a.key() != "ns/w.1" {
		t.Errorf("key = %q", a.key())
	}
}

func TestParseGVR(t *testing.T) {
	gvr, err := parseGVR("/v1/configmaps")
	if err != nil || gvr.Group != "" || gvr.Version != "v1" || gvr.Resource != "configmaps" {
		t.Errorf("core group: %v %v", gvr, err)
	}
	if resourceURL("https://h/", gvr) != "https://h/api/v1/configmaps" {
		t.Errorf("core URL %q", resourceURL("https://h/", gvr))
	}
	for _, bad := range []string{"", "a/b", "a//c", "a/b/"} {
		if _, err := parseGVR(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}
