// Command crbridge-peer is the benchmark's stand-in for what users deploy instead of
// crbridge: a client-go dynamic informer that publishes every Add / Update / Delete of
// one resource to Kafka or NATS JetStream, with no state of its own (the design of
// Knative's ApiServerSource, Argo Events' resource event source and kubewatch).
//
//	crbridge-peer --gvr bench.crbridge.io/v1/benchwidgets [--namespace NS] \
//	    --sink kafka --brokers 127.0.0.1:19092 --topic T
//	crbridge-peer --gvr ... --sink nats --url nats://127.0.0.1:14222 --stream S --subject P
//	crbridge-peer --gvr ... --sink stdout
//
// On stderr: "listening ADDR" once /metrics and /readyz are served, "synced N" once the
// informer's initial list is in its cache (its N Add events may still be in flight), and
// "totals observed=… published=… failed=…" at exit after SIGTERM / SIGINT, when the
// events in flight have been settled.
//
// Delivery: at most once. Nothing is persisted; an event a broker refuses is counted and
// dropped; events in flight when the process dies are lost, and so are deletions that
// happen while it is down (the next list no longer has the object, and an informer starting
// afresh has nothing to compare with). Every start publishes an Add per existing object;
// ids are random, so consumers cannot deduplicate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

type options struct {
	kubeconfig string
	gvr        string
	namespace  string
	sink       string
	brokers    string
	topic      string
	url        string
	stream     string
	subject    string
	listen     string
	qps        float64
	burst      int
}

// env returns the variable's value, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func parseOptions() (*options, error) {
	o := &options{}
	flag.StringVar(&o.kubeconfig, "kubeconfig", env("KUBECONFIG", ""), "kubeconfig file (env KUBECONFIG; empty: in-cluster)")
	flag.StringVar(&o.gvr, "gvr", env("PEER_GVR", ""), "group/version/resource to watch, e.g. bench.crbridge.io/v1/benchwidgets (env PEER_GVR)")
	flag.StringVar(&o.namespace, "namespace", env("PEER_NAMESPACE", ""), "watch only this namespace (env PEER_NAMESPACE; empty: all)")
	flag.StringVar(&o.sink, "sink", env("PEER_SINK", ""), "kafka, nats or stdout (env PEER_SINK)")
	flag.StringVar(&o.brokers, "brokers", env("PEER_KAFKA_BROKERS", ""), "Kafka bootstrap servers, comma-separated (env PEER_KAFKA_BROKERS)")
	flag.StringVar(&o.topic, "topic", env("PEER_KAFKA_TOPIC", ""), "Kafka topic (env PEER_KAFKA_TOPIC)")
	flag.StringVar(&o.url, "url", env("PEER_NATS_URL", ""), "NATS server URL (env PEER_NATS_URL)")
	flag.StringVar(&o.stream, "stream", env("PEER_NATS_STREAM", ""), "JetStream stream to create or update over SUBJECT.> (env PEER_NATS_STREAM; empty: it exists)")
	flag.StringVar(&o.subject, "subject", env("PEER_NATS_SUBJECT", ""), "subject prefix: events go to PREFIX.NAMESPACE.NAME (env PEER_NATS_SUBJECT)")
	flag.StringVar(&o.listen, "listen", env("PEER_LISTEN", "127.0.0.1:0"), "address of /metrics and /readyz (env PEER_LISTEN)")
	// client-go's default of 5 requests/s would throttle the paged initial list of 100k
	// objects (200 pages) for 40 s; deployed informers raise it too.
	flag.Float64Var(&o.qps, "qps", 100, "client-side request rate limit towards the API server")
	flag.IntVar(&o.burst, "burst", 200, "client-side request burst towards the API server")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	return o, nil
}

// parseGVR reads group/version/resource; the core group is written as an empty first part
// ("/v1/configmaps").
func parseGVR(s string) (schema.GroupVersionResource, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return schema.GroupVersionResource{}, fmt.Errorf("--gvr %q: expected group/version/resource", s)
	}
	return schema.GroupVersionResource{Group: parts[0], Version: parts[1], Resource: parts[2]}, nil
}

// resourceURL is the collection's path on the API server: the events' CloudEvents source.
func resourceURL(host string, gvr schema.GroupVersionResource) string {
	host = strings.TrimSuffix(host, "/")
	if gvr.Group == "" {
		return fmt.Sprintf("%s/api/%s/%s", host, gvr.Version, gvr.Resource)
	}
	return fmt.Sprintf("%s/apis/%s/%s/%s", host, gvr.Group, gvr.Version, gvr.Resource)
}

func openSink(o *options) (sink, error) {
	switch o.sink {
	case "kafka":
		return newKafkaSink(o.brokers, o.topic)
	case "nats":
		return newNatsSink(o.url, o.stream, o.subject)
	case "stdout":
		return newStdoutSink(), nil
	}
	return nil, fmt.Errorf("--sink %q: expected kafka, nats or stdout", o.sink)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "crbridge-peer: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseOptions()
	if err != nil {
		return err
	}
	gvr, err := parseGVR(o.gvr)
	if err != nil {
		return err
	}
	config, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	config.QPS = float32(o.qps)
	config.Burst = o.burst
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	out, err := openSink(o)
	if err != nil {
		return err
	}

	st := &stats{}
	listener, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	go func() {
		if err := st.serve(listener); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintf(os.Stderr, "crbridge-peer: http: %v\n", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "listening %s\n", listener.Addr())

	source := resourceURL(config.Host, gvr)
	publish := func(k kind, obj interface{}) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			fmt.Fprintf(os.Stderr, "crbridge-peer: unexpected %T in the informer\n", obj)
			return
		}
		st.observed[k].Add(1)
		e, err := newEvent(k, source, u, time.Now())
		if err != nil {
			fmt.Fprintf(os.Stderr, "crbridge-peer: %v\n", err)
			st.failed[k].Add(1)
			return
		}
		out.Publish(e, func(err error) { st.settle(k, err) })
	}

	// Resync 0: no periodic re-delivery of unchanged objects, only real notifications.
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, o.namespace, nil)
	informer := factory.ForResource(gvr).Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { publish(added, obj) },
		UpdateFunc: func(_, obj interface{}) { publish(updated, obj) },
		DeleteFunc: func(obj interface{}) { publish(deleted, obj) },
	}); err != nil {
		return fmt.Errorf("adding the event handler: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	informerCtx, stopInformer := context.WithCancel(context.Background())
	factory.Start(informerCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		stopInformer()
		factory.Shutdown()
		out.Close()
		return errors.New("stopped before the informer synced")
	}
	st.synced.Store(true)
	fmt.Fprintf(os.Stderr, "synced %d\n", len(informer.GetStore().ListKeys()))

	<-ctx.Done()
	// Stop watching, let the handler finish what it was given, then settle what is in flight.
	stopInformer()
	factory.Shutdown()
	closeErr := out.Close()
	listener.Close()
	fmt.Fprintln(os.Stderr, st.summary())
	return closeErr
}
