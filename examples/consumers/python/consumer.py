"""A crbridge consumer in Python: RabbitMQ (pika) + the CloudEvents SDK (AMQP binding).

It reads the events crbridge publishes to an AMQP exchange and applies the consumer rules
of crbridge's README ("For consumers"):

1. parse each message with the CloudEvents SDK and drop a duplicate `id` (delivery is at
   least once; a re-send or a `crbridge replay` keeps the id);
2. per object (`partitionkey`, the uid) keep the highest `sequence` and skip anything not
   newer (the zero-padded `sequence` compares as a string);
3. apply an update's `data.patch` (RFC 6902) to the previous event's normalized object and
   check that the result is this event's normalized `data.object`;
4. on `deleted`, mark the object deleted.

It stops once CONSUMER_EXPECT distinct ids arrived (or after CONSUMER_TIMEOUT_SECS) and
prints one JSON summary line on stdout; logs go to stderr. Exit 0 iff no patch mismatched
and exactly CONSUMER_EXPECT events arrived.
"""

import copy
import json
import os
import sys
import time

import jsonpatch
import pika
from cloudevents.core.bindings import amqp, rabbitmq


def log(*parts):
    print("python consumer:", *parts, file=sys.stderr, flush=True)


def normalized(obj):
    """The form crbridge computes patches between (README, "The event"): the object without
    the bookkeeping fields whose change is not a change, and without `status` (a watch with
    the default `includeStatus: false`; a watch with `ignore`, `include` or `fields` leaves
    out more, and a consumer of such a watch must leave out the same)."""
    o = copy.deepcopy(obj)
    o.pop("status", None)
    meta = o.get("metadata") or {}
    for field in ("resourceVersion", "generation", "managedFields"):
        meta.pop(field, None)
    return o


def patch_gives(previous, patch, expected):
    """Whether `patch` turns `previous` into `expected` (a patch that does not apply does not)."""
    try:
        return jsonpatch.JsonPatch(patch).apply(previous) == expected
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        log("patch does not apply:", e)
        return False


def to_cloudevent(properties, body):
    """Parses one AMQP 0-9-1 message with the SDK. crbridge's `headerPrefix` is
    `cloudEvents:` (the CloudEvents AMQP binding) by default or `ce-` (the RabbitMQ
    binding); a structured message (`application/cloudevents+json`) works with either."""
    headers = properties.headers or {}
    if any(k.startswith("ce-") for k in headers):
        return rabbitmq.from_rabbitmq_event(
            rabbitmq.RabbitMQMessage(
                headers=headers, content_type=properties.content_type, body=body
            )
        )
    return amqp.from_amqp_event(
        amqp.AMQPMessage(
            properties={"content-type": properties.content_type},
            application_properties=headers,
            application_data=body,
        )
    )


class Consumer:
    """The consumer's state: what it saw, and per object the last applied event."""

    def __init__(self):
        self.seen = set()  # event ids
        self.objects = {}  # uid -> {name, namespace, sequence, deleted}
        self.state = {}  # uid -> normalized object of the last applied event
        self.counts = dict(duplicates=0, stale=0, patched=0, unchecked=0, mismatches=0)

    def handle(self, event):
        if event.get_id() in self.seen:
            self.counts["duplicates"] += 1
            return
        self.seen.add(event.get_id())

        uid = event.get_extension("partitionkey")
        sequence = event.get_extension("sequence")
        kept = self.objects.get(uid)
        if kept is not None and sequence <= kept["sequence"]:
            self.counts["stale"] += 1
            return

        change = event.get_type().rsplit(".", 1)[-1]  # created, updated, deleted, snapshot
        data = event.get_data() or {}
        obj = data.get("object")
        if change == "updated" and data.get("patch") is not None:
            previous = self.state.get(uid)
            if previous is None or obj is None:
                # Started mid-stream (or `payload: patch`): nothing to check against.
                self.counts["unchecked"] += 1
            else:
                if patch_gives(previous, data["patch"], normalized(obj)):
                    self.counts["patched"] += 1
                else:
                    self.counts["mismatches"] += 1
                    log("patch mismatch", event.get_id(), event.get_subject())

        self.objects[uid] = {
            "name": event.get_extension("crbname"),
            "namespace": event.get_extension("crbnamespace") or "",
            "sequence": sequence,
            "deleted": change == "deleted",
        }
        if change == "deleted":
            self.state.pop(uid, None)
        elif obj is not None:
            self.state[uid] = normalized(obj)

    def summary(self):
        return {"lang": "python", "events": len(self.seen), **self.counts, "objects": self.objects}


def setting(name, default=None):
    value = os.environ.get(name) or default
    if value is None:
        log(f"{name} is not set (see README.md for the variables)")
        sys.exit(1)
    return value


def consume(consumer, expect, deadline):
    """Feeds the queue's messages to `consumer` until it saw `expect` ids or `deadline`."""
    url = setting("AMQP_URL")
    exchange = setting("AMQP_EXCHANGE")
    queue = setting("AMQP_QUEUE")
    binding = setting("AMQP_ROUTING_KEY", "#")

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    # The same declarations crbridge makes (durable topic exchange) and a durable queue:
    # declaring what exists already is a no-op, so the order of starting does not matter.
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key=binding)
    log(f"reading queue {queue} bound to {exchange} with {binding}")

    def on_message(ch, method, properties, body):
        try:
            consumer.handle(to_cloudevent(properties, body))
        except Exception as e:  # a message that is not a CloudEvent: log it, go on
            log("skipping a message that is not a crbridge event:", e)
        ch.basic_ack(method.delivery_tag)

    channel.basic_qos(prefetch_count=100)
    channel.basic_consume(queue, on_message)
    while len(consumer.seen) < expect and time.monotonic() < deadline:
        left = max(0.0, deadline - time.monotonic())
        connection.process_data_events(time_limit=min(0.5, left))
    connection.close()


def main():
    expect = int(setting("CONSUMER_EXPECT"))
    timeout = float(setting("CONSUMER_TIMEOUT_SECS", "60"))
    consumer = Consumer()
    why = "timed out after %gs" % timeout
    try:
        consume(consumer, expect, time.monotonic() + timeout)
    except Exception as e:  # a broker error ends the run; the summary still says how far it got
        why = f"error: {e!r}"

    summary = consumer.summary()
    print(json.dumps(summary), flush=True)
    if summary["events"] != expect:
        log(f"stopped ({why}) waiting for {expect} events, got {summary['events']}")
    ok = summary["mismatches"] == 0 and summary["events"] == expect
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
