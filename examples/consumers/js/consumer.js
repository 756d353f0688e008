// A crbridge consumer in JavaScript: Kafka (kafkajs) + the CloudEvents SDK (Kafka binding).
//
// It reads the events crbridge publishes to a Kafka topic and applies the consumer rules of
// crbridge's README ("For consumers"):
//
// 1. parse each record with the CloudEvents SDK (`Kafka.toEvent`, binary `ce_*` headers or
//    structured) and drop a duplicate `id` (delivery is at least once; a re-send or a
//    `crbridge replay` keeps the id); skip tombstones (records with a null value);
// 2. per object (`partitionkey`, the uid, also the record key) keep the highest `sequence`
//    and skip anything not newer (the zero-padded `sequence` compares as a string);
// 3. apply an update's `data.patch` (RFC 6902) to the previous event's normalized object and
//    check that the result is this event's normalized `data.object`;
// 4. on `deleted`, mark the object deleted.
//
// It stops once CONSUMER_EXPECT distinct ids arrived (or after CONSUMER_TIMEOUT_SECS) and
// prints one JSON summary line on stdout; logs go to stderr. Exit 0 iff no patch mismatched
// and exactly CONSUMER_EXPECT events arrived.
"use strict";

const { Kafka: KafkaBinding } = require("cloudevents");
const { Kafka, logLevel } = require("kafkajs");
const jsonpatch = require("fast-json-patch");

const log = (...parts) => console.error("js consumer:", ...parts);

// The form crbridge computes patches between (README, "The event"): the object without the
// bookkeeping fields whose change is not a change, and without `status` (a watch with the
// default `includeStatus: false`; a watch with `ignore`, `include` or `fields` leaves out
// more, and a consumer of such a watch must leave out the same).
function normalized(object) {
  const o = structuredClone(object);
  delete o.status;
  if (o.metadata) {
    delete o.metadata.resourceVersion;
    delete o.metadata.generation;
    delete o.metadata.managedFields;
  }
  return o;
}

// Whether `patch` turns `previous` into `expected` (a patch that does not apply does not).
function patchGives(previous, patch, expected) {
  try {
    const { newDocument } = jsonpatch.applyPatch(previous, patch, true, false);
    return jsonpatch.compare(newDocument, expected).length === 0;
  } catch (e) {
    log("patch does not apply:", e.message);
    return false;
  }
}

// The consumer's state: what it saw, and per object the last applied event.
class Consumer {
  constructor() {
    this.seen = new Set(); // event ids
    this.objects = {}; // uid -> {name, namespace, sequence, deleted}
    this.state = new Map(); // uid -> normalized object of the last applied event
    this.counts = { duplicates: 0, stale: 0, patched: 0, unchecked: 0, mismatches: 0 };
  }

  handle(event) {
    if (this.seen.has(event.id)) {
      this.counts.duplicates++;
      return;
    }
    this.seen.add(event.id);

    const uid = event.partitionkey;
    const kept = this.objects[uid];
    if (kept && event.sequence <= kept.sequence) {
      this.counts.stale++;
      return;
    }

    // created, updated, deleted or snapshot
    const change = event.type.slice(event.type.lastIndexOf(".") + 1);
    const data = event.data || {};
    if (change === "updated" && data.patch != null) {
      const previous = this.state.get(uid);
      if (previous === undefined || data.object == null) {
        // Started mid-stream (or `payload: patch`): nothing to check against.
        this.counts.unchecked++;
      } else {
        if (patchGives(previous, data.patch, normalized(data.object))) {
          this.counts.patched++;
        } else {
          this.counts.mismatches++;
          log("patch mismatch", event.id, event.subject);
        }
      }
    }

    this.objects[uid] = {
      name: event.crbname,
      namespace: event.crbnamespace || "",
      sequence: event.sequence,
      deleted: change === "deleted",
    };
    if (change === "deleted") this.state.delete(uid);
    else if (data.object != null) this.state.set(uid, normalized(data.object));
  }

  summary() {
    return { lang: "js", events: this.seen.size, ...this.counts, objects: this.objects };
  }
}

// kafkajs hands headers and key over as Buffers; the SDK's binding reads strings.
function toKafkaMessage(m) {
  const headers = {};
  for (const [k, v] of Object.entries(m.headers || {})) headers[k] = v == null ? v : v.toString();
  const key = m.key == null ? undefined : m.key.toString();
  return { key, value: m.value, headers, timestamp: m.timestamp };
}

function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") {
    log(`${name} is not set (see README.md for the variables)`);
    process.exit(1);
  }
  return v;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Feeds the topic's records to `consumer` until it saw `expect` ids or `deadline` passed;
// says which.
async function consume(kafkaConsumer, topic, consumer, expect, deadline) {
  await kafkaConsumer.connect();
  // crbridge creates the topic with its first event: a consumer started earlier waits.
  for (;;) {
    try {
      // A new group reads the topic from the earliest offset (how a new service bootstraps).
      await kafkaConsumer.subscribe({ topics: [topic], fromBeginning: true });
      break;
    } catch (e) {
      if (Date.now() >= deadline) throw e;
      log(`waiting for topic ${topic}: ${e.message}`);
      await sleep(1000);
    }
  }
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const timer = setTimeout(() => done("timeout"), Math.max(0, deadline - Date.now()));
  await kafkaConsumer.run({
    eachMessage: async ({ message }) => {
      if (message.value === null) return; // a tombstone (`tombstones: true`): not a CloudEvent
      try {
        consumer.handle(KafkaBinding.toEvent(toKafkaMessage(message)));
      } catch (e) {
        log("skipping a record that is not a crbridge event:", e.message);
      }
      if (consumer.seen.size >= expect) done("complete");
    },
  });
  if (consumer.seen.size >= expect) done("complete");
  const why = await finished;
  clearTimeout(timer);
  return why;
}

async function main() {
  const expect = Number(env("CONSUMER_EXPECT"));
  const timeoutSecs = Number(env("CONSUMER_TIMEOUT_SECS", "60"));
  const topic = env("KAFKA_TOPIC");
  const group = env("KAFKA_GROUP");
  const kafka = new Kafka({
    clientId: "crbridge-consumer-js",
    brokers: env("KAFKA_BOOTSTRAP").split(","),
    logLevel: logLevel.WARN,
  });
  const kafkaConsumer = kafka.consumer({ groupId: group });
  const consumer = new Consumer();
  log(`reading topic ${topic} as group ${group}`);

  let why;
  try {
    why = await consume(kafkaConsumer, topic, consumer, expect, Date.now() + timeoutSecs * 1000);
  } catch (e) {
    why = `error: ${e.message}`;
  } finally {
    await kafkaConsumer.disconnect().catch(() => {});
  }
  const summary = consumer.summary();
  console.log(JSON.stringify(summary));
  if (why !== "complete") {
    const reason = why === "timeout" ? `timed out after ${timeoutSecs}s` : why;
    log(`stopped (${reason}) waiting for ${expect} events, got ${summary.events}`);
  }
  return summary.mismatches === 0 && summary.events === expect ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log(e.stack || String(e));
    process.exit(1);
  },
);
