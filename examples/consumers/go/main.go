// A crbridge consumer in Go: reads the CloudEvents crbridge publishes to a NATS JetStream
// stream with the official CloudEvents SDK (github.com/cloudevents/sdk-go) and its JetStream
// binding, and applies the rules every consumer of crbridge follows (README, "For
// consumers"):
//
//  1. dedupe by the event `id` (delivery is at least once; a re-sent event keeps its id);
//  2. per object (`partitionkey`, the uid) keep the highest `sequence` and skip anything
//     not newer (it is zero-padded to 20 digits, so string order is numeric order);
//  3. for an `updated` event, apply `data.patch` (RFC 6902) to the previous event's
//     normalized object and check that it gives this event's normalized `data.object`;
//  4. a `deleted` event marks the object deleted.
//
// It stops once CONSUMER_EXPECT distinct events arrived (or CONSUMER_TIMEOUT_SECS passed)
// and prints one JSON summary line on stdout; logs go to stderr. Exit 0 iff every patch
// checked out and exactly CONSUMER_EXPECT events arrived.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	cejsm "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	ceclient "github.com/cloudevents/sdk-go/v2/client"
	"github.com/cloudevents/sdk-go/v2/types"
	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/nats-io/nats.go"
)

// object is what the consumer keeps per uid.
type object struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Sequence  string `json:"sequence"`
	Deleted   bool   `json:"deleted"`
	// The normalized form of the last `data.object`, for the next patch check.
	normalized []byte
}

// summary is the one line printed at the end.
type summary struct {
	Lang       string             `json:"lang"`
	Events     int                `json:"events"`
	Duplicates int                `json:"duplicates"`
	Stale      int                `json:"stale"`
	Patched    int                `json:"patched"`
	Unchecked  int                `json:"unchecked"`
	Mismatches int                `json:"mismatches"`
	Objects    map[string]*object `json:"objects"`
}

// consumer holds the state: ids seen and the latest state per object.
type consumer struct {
	mu     sync.Mutex
	seen   map[string]bool
	sum    summary
	expect int
	done   chan struct{}
}

// data is the `data` of a crbridge event.
type data struct {
	Object json.RawMessage `json:"object"`
	Patch  json.RawMessage `json:"patch"`
}

// normalize drops what crbridge leaves out when it computes a patch (README, "The event"):
// metadata.resourceVersion, metadata.generation, metadata.managedFields and status (the
// watch's default `includeStatus: false`, without `ignore`, `include` or `fields`).
func normalize(raw json.RawMessage) ([]byte, error) {
	var o map[string]any
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, err
	}
	delete(o, "status")
	if meta, ok := o["metadata"].(map[string]any); ok {
		delete(meta, "resourceVersion")
		delete(meta, "generation")
		delete(meta, "managedFields")
	}
	return json.Marshal(o)
}

// ext reads a CloudEvents extension attribute as a string.
func ext(e cloudevents.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	s, err := types.ToString(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return s
}

// handle applies one event; the SDK calls it for every message it parsed.
func (c *consumer) handle(e cloudevents.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// 1. Dedupe by id.
	if c.seen[e.ID()] {
		c.sum.Duplicates++
		log.Printf("duplicate %s (%s)", e.ID(), e.Type())
		return
	}
	c.seen[e.ID()] = true
	c.sum.Events++
	defer func() {
		if c.sum.Events == c.expect {
			close(c.done)
		}
	}()

	// 2. Per object, only newer sequences.
	uid, seq := ext(e, "partitionkey"), ext(e, "sequence")
	prev := c.sum.Objects[uid]
	if prev != nil && seq <= prev.Sequence {
		c.sum.Stale++
		log.Printf("stale %s %s: sequence %s, kept %s", e.Type(), e.Subject(), seq, prev.Sequence)
		return
	}
	change := e.Type()[strings.LastIndex(e.Type(), ".")+1:]
	var d data
	if err := e.DataAs(&d); err != nil {
		log.Printf("event %s: unreadable data: %v", e.ID(), err)
		c.sum.Mismatches++
		return
	}
	next := &object{
		Name:      ext(e, "crbname"),
		Namespace: ext(e, "crbnamespace"),
		Sequence:  seq,
		Deleted:   change == "deleted",
	}
	if len(d.Object) > 0 && string(d.Object) != "null" {
		n, err := normalize(d.Object)
		if err != nil {
			log.Printf("event %s: data.object: %v", e.ID(), err)
			c.sum.Mismatches++
			return
		}
		next.normalized = n
	}

	// 3. The patch turns the previous normalized object into this one.
	if change == "updated" && len(d.Patch) > 0 && string(d.Patch) != "null" {
		if prev == nil || prev.normalized == nil {
			c.sum.Unchecked++ // started mid-stream: nothing to apply the patch to
		} else if c.check(prev.normalized, d.Patch, next.normalized) {
			c.sum.Patched++
		} else {
			c.sum.Mismatches++
			log.Printf("mismatch %s %s at sequence %s: patch %s", e.Subject(), e.ID(), seq, d.Patch)
		}
	}
	// 4. A deletion keeps the last known state, marked deleted.
	c.sum.Objects[uid] = next
}

// check applies patch to prev and compares the result with want.
func (c *consumer) check(prev []byte, patch json.RawMessage, want []byte) bool {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		log.Printf("patch unreadable: %v", err)
		return false
	}
	got, err := p.Apply(prev)
	if err != nil {
		log.Printf("patch does not apply: %v", err)
		return false
	}
	return want != nil && jsonpatch.Equal(got, want)
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("go-consumer: ")
	expect, err := strconv.Atoi(os.Getenv("CONSUMER_EXPECT"))
	if err != nil || expect <= 0 {
		log.Fatal("CONSUMER_EXPECT must be a positive number of events")
	}
	timeout := 60
	if v := os.Getenv("CONSUMER_TIMEOUT_SECS"); v != "" {
		if timeout, err = strconv.Atoi(v); err != nil {
			log.Fatalf("CONSUMER_TIMEOUT_SECS: %v", err)
		}
	}
	url, stream, subject := os.Getenv("NATS_URL"), os.Getenv("NATS_STREAM"), os.Getenv("NATS_SUBJECT")
	if url == "" {
		url = nats.DefaultURL
	}
	if stream == "" || subject == "" {
		log.Fatal("NATS_STREAM and NATS_SUBJECT are required")
	}

	// An ephemeral push consumer that delivers the whole stream from its start. It does not
	// acknowledge: the program keeps its own state (dedupe, sequence), so a restart simply
	// reads the stream again. A service would use a durable consumer (nats.Durable) instead.
	proto, err := cejsm.NewConsumer(url, stream, subject,
		cejsm.NatsOptions(nats.Name("crbridge-go-consumer")), nil,
		[]nats.SubOpt{nats.BindStream(stream), nats.DeliverAll(), nats.AckNone()})
	if err != nil {
		log.Fatalf("connecting to NATS %s, stream %s: %v", url, stream, err)
	}
	defer proto.Close(context.Background())
	// One message at a time, in stream order: by default the SDK runs the callback on
	// several goroutines at once, which would reorder the events of an object.
	client, err := cloudevents.NewClient(proto,
		ceclient.WithPollGoroutines(1), ceclient.WithBlockingCallback())
	if err != nil {
		log.Fatalf("CloudEvents client: %v", err)
	}

	c := &consumer{
		seen:   map[string]bool{},
		sum:    summary{Lang: "go", Objects: map[string]*object{}},
		expect: expect,
		done:   make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := client.StartReceiver(ctx, c.handle); err != nil {
			log.Printf("receiver: %v", err)
		}
	}()
	log.Printf("reading stream %s (subject %s) at %s, expecting %d events", stream, subject, url, expect)

	timedOut := false
	select {
	case <-c.done:
	case <-time.After(time.Duration(timeout) * time.Second):
		timedOut = true
	}
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	line, _ := json.Marshal(c.sum)
	fmt.Println(string(line))
	if timedOut {
		log.Printf("timed out after %ds waiting for %d more of %d events on %s",
			timeout, expect-c.sum.Events, expect, subject)
	}
	if timedOut || c.sum.Mismatches != 0 || c.sum.Events != expect {
		os.Exit(1)
	}
}
