package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// contentType of a structured-mode CloudEvent in JSON.
const contentType = "application/cloudevents+json"

// sink publishes events. Publish hands one over and calls done exactly once with the
// broker's verdict, possibly later and from another goroutine; nothing is kept on disk, so
// what is in flight when the process dies is lost.
type sink interface {
	Publish(e *event, done func(error))
	// Close waits for the events in flight, then disconnects.
	Close() error
}

// kafkaSink uses sarama's AsyncProducer with acks=all. The asynchronous producer rather
// than the SyncProducer: a SyncProducer in the informer's handler waits one broker round
// trip (acks=all) per event and would cap the peer far below the API server's pace, which
// is not how such a bridge is deployed when throughput matters; sarama batches what queues
// up meanwhile, as librdkafka does for crbridge.
type kafkaSink struct {
	producer sarama.AsyncProducer
	topic    string
	drained  sync.WaitGroup
}

func newKafkaSink(brokers, topic string) (*kafkaSink, error) {
	if topic == "" {
		return nil, errors.New("--topic is required with --sink kafka")
	}
	config := sarama.NewConfig()
	config.ClientID = "crbridge-peer"
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Return.Successes = true
	config.Producer.Return.Errors = true
	producer, err := sarama.NewAsyncProducer(strings.Split(brokers, ","), config)
	if err != nil {
		return nil, fmt.Errorf("connecting to Kafka at %s: %w", brokers, err)
	}
	s := &kafkaSink{producer: producer, topic: topic}
	s.drained.Add(2)
	go func() {
		defer s.drained.Done()
		for m := range producer.Successes() {
			m.Metadata.(func(error))(nil)
		}
	}()
	go func() {
		defer s.drained.Done()
		for e := range producer.Errors() {
			e.Msg.Metadata.(func(error))(e.Err)
		}
	}()
	return s, nil
}

func (s *kafkaSink) Publish(e *event, done func(error)) {
	s.producer.Input() <- &sarama.ProducerMessage{
		Topic:    s.topic,
		Key:      sarama.StringEncoder(e.key()),
		Value:    sarama.ByteEncoder(e.body),
		Headers:  []sarama.RecordHeader{{Key: []byte("content-type"), Value: []byte(contentType)}},
		Metadata: done,
	}
}

func (s *kafkaSink) Close() error {
	s.producer.AsyncClose()
	s.drained.Wait()
	return nil
}

// natsSink publishes to a JetStream stream and awaits each PubAck before the next event,
// as the informer's handler would: one event at a time, in order.
type natsSink struct {
	conn   *nats.Conn
	js     jetstream.JetStream
	prefix string
}

func newNatsSink(url, stream, prefix string) (*natsSink, error) {
	if prefix == "" {
		return nil, errors.New("--subject is required with --sink nats")
	}
	conn, err := nats.Connect(url, nats.Name("crbridge-peer"))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("JetStream context: %w", err)
	}
	if stream != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:     stream,
			Subjects: []string{prefix + ".>"},
			Storage:  jetstream.FileStorage,
		})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("creating stream %s: %w", stream, err)
		}
	}
	return &natsSink{conn: conn, js: js, prefix: prefix}, nil
}

func (s *natsSink) Publish(e *event, done func(error)) {
	msg := nats.NewMsg(e.subject(s.prefix))
	msg.Data = e.body
	msg.Header.Set("Content-Type", contentType)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.js.PublishMsg(ctx, msg)
	done(err)
}

func (s *natsSink) Close() error {
	return s.conn.Drain()
}

// stdoutSink writes one event per line to stdout; for memory measurements, where crbridge
// runs with its stdout sink too.
type stdoutSink struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func newStdoutSink() *stdoutSink {
	return &stdoutSink{out: bufio.NewWriterSize(os.Stdout, 1<<16)}
}

func (s *stdoutSink) Publish(e *event, done func(error)) {
	s.mu.Lock()
	_, err := s.out.Write(e.body)
	if err == nil {
		err = s.out.WriteByte('\n')
	}
	s.mu.Unlock()
	done(err)
}

func (s *stdoutSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Flush()
}
