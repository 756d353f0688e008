package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kind is what happened to an object, as the informer reports it.
type kind int

const (
	added kind = iota
	updated
	deleted
	kinds // number of kinds, for per-kind counters
)

// String is the kind's name in the event and in the metrics' type label; the same words
// crbridge uses in crbridge_events_total{type}.
func (k kind) String() string {
	switch k {
	case added:
		return "added"
	case updated:
		return "updated"
	case deleted:
		return "deleted"
	}
	return "unknown"
}

// envelope is a structured-mode CloudEvent, as the informer-based peers send them
// (Knative's ApiServerSource, Argo Events' resource event source): a fresh random id per
// delivery, so a consumer cannot tell a redelivery from a new change.
type envelope struct {
	SpecVersion     string  `json:"specversion"`
	ID              string  `json:"id"`
	Source          string  `json:"source"`
	Type            string  `json:"type"`
	Subject         string  `json:"subject"`
	Time            string  `json:"time"`
	DataContentType string  `json:"datacontenttype"`
	Data            payload `json:"data"`
}

// payload is the event's data: what happened and the object as the informer holds it.
type payload struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// event is one change ready to publish.
type event struct {
	kind      kind
	namespace string
	name      string
	body      []byte
}

// key is the object's namespace/name: the Kafka partitioning key, so one object's events
// stay in order on one partition.
func (e *event) key() string {
	if e.namespace == "" {
		return e.name
	}
	return e.namespace + "/" + e.name
}

// subject is `prefix.namespace.name`, dots inside names replaced (a NATS subject token
// cannot hold one).
func (e *event) subject(prefix string) string {
	token := func(s string) string {
		if s == "" {
			return "_"
		}
		return strings.ReplaceAll(s, ".", "_")
	}
	return prefix + "." + token(e.namespace) + "." + token(e.name)
}

// newEvent builds the envelope of one informer notification.
func newEvent(k kind, source string, obj *unstructured.Unstructured, now time.Time) (*event, error) {
	object, err := obj.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	e := &event{kind: k, namespace: obj.GetNamespace(), name: obj.GetName()}
	body, err := json.Marshal(envelope{
		SpecVersion:     "1.0",
		ID:              uuid.NewString(),
		Source:          source,
		Type:            "io.crbridge.peer.resource." + k.String(),
		Subject:         e.key(),
		Time:            now.UTC().Format(time.RFC3339Nano),
		DataContentType: "application/json",
		Data:            payload{Type: k.String(), Object: object},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the event of %s: %w", e.key(), err)
	}
	e.body = body
	return e, nil
}
