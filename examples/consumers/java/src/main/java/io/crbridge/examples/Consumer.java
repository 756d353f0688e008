package io.crbridge.examples;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.flipkart.zjsonpatch.JsonPatch;
import io.cloudevents.CloudEvent;
import io.cloudevents.kafka.CloudEventDeserializer;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A crbridge consumer in Java: reads the CloudEvents crbridge publishes to a Kafka topic with
 * the official CloudEvents Java SDK (its Kafka binding's {@link CloudEventDeserializer}) and
 * applies the rules every consumer of crbridge follows (README, "For consumers"):
 *
 * <ol>
 *   <li>dedupe by the event {@code id} (delivery is at least once; a re-sent event keeps its id);
 *   <li>per object ({@code partitionkey}, the uid) keep the highest {@code sequence} and skip
 *       anything not newer (it is zero-padded to 20 digits, so string order is numeric order);
 *   <li>for an {@code updated} event, apply {@code data.patch} (RFC 6902) to the previous
 *       event's normalized object and check that it gives this event's normalized {@code
 *       data.object};
 *   <li>a {@code deleted} event marks the object deleted.
 * </ol>
 *
 * <p>It stops once CONSUMER_EXPECT distinct events arrived (or CONSUMER_TIMEOUT_SECS passed)
 * and prints one JSON summary line on stdout; logs go to stderr. Exit 0 iff every patch
 * checked out and exactly CONSUMER_EXPECT events arrived.
 */
public final class Consumer {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** What the consumer keeps per uid. */
  private static final class Kept {
    String name;
    String namespace;
    String sequence;
    boolean deleted;
    /** The normalized form of the last {@code data.object}, for the next patch check. */
    JsonNode normalized;
  }

  private final Set<String> seen = new HashSet<>();
  private final Map<String, Kept> objects = new TreeMap<>();
  private int events;
  private int duplicates;
  private int stale;
  private int patched;
  private int unchecked;
  private int mismatches;

  /**
   * Drops what crbridge leaves out when it computes a patch (README, "The event"):
   * metadata.resourceVersion, metadata.generation, metadata.managedFields and status (the
   * watch's default {@code includeStatus: false}, without {@code ignore}, {@code include} or
   * {@code fields}).
   */
  static JsonNode normalize(JsonNode object) {
    ObjectNode o = object.deepCopy();
    o.remove("status");
    if (o.get("metadata") instanceof ObjectNode meta) {
      meta.remove(List.of("resourceVersion", "generation", "managedFields"));
    }
    return o;
  }

  private static String ext(CloudEvent e, String name) {
    Object v = e.getExtension(name);
    return v == null ? "" : v.toString();
  }

  private static void log(String msg) {
    System.err.println("java-consumer: " + msg);
  }

  /** Applies one event. */
  void handle(CloudEvent e) throws Exception {
    // 1. Dedupe by id.
    if (!seen.add(e.getId())) {
      duplicates++;
      log("duplicate " + e.getId() + " (" + e.getType() + ")");
      return;
    }
    events++;

    // 2. Per object, only newer sequences.
    String uid = ext(e, "partitionkey");
    String seq = ext(e, "sequence");
    Kept prev = objects.get(uid);
    if (prev != null && seq.compareTo(prev.sequence) <= 0) {
      stale++;
      log("stale " + e.getType() + " " + e.getSubject() + ": sequence " + seq + ", kept " + prev.sequence);
      return;
    }
    String change = e.getType().substring(e.getType().lastIndexOf('.') + 1);
    JsonNode data = e.getData() == null ? JSON.nullNode() : JSON.readTree(e.getData().toBytes());
    Kept next = new Kept();
    next.name = ext(e, "crbname");
    next.namespace = ext(e, "crbnamespace");
    next.sequence = seq;
    next.deleted = change.equals("deleted");
    JsonNode object = data.path("object");
    next.normalized = object.isObject() ? normalize(object) : null;

    // 3. The patch turns the previous normalized object into this one.
    JsonNode patch = data.path("patch");
    if (change.equals("updated") && patch.isArray()) {
      if (prev == null || prev.normalized == null) {
        unchecked++; // started mid-stream: nothing to apply the patch to
      } else if (check(prev.normalized, patch, next.normalized)) {
        patched++;
      } else {
        mismatches++;
        log("mismatch " + e.getSubject() + " " + e.getId() + " at sequence " + seq + ": patch " + patch);
      }
    }
    // 4. A deletion keeps the last known state, marked deleted.
    objects.put(uid, next);
  }

  private static boolean check(JsonNode prev, JsonNode patch, JsonNode want) {
    try {
      return want != null && JsonPatch.apply(patch, prev).equals(want);
    } catch (RuntimeException ex) {
      log("patch does not apply: " + ex.getMessage());
      return false;
    }
  }

  private String summary() throws Exception {
    ObjectNode s = JSON.createObjectNode();
    s.put("lang", "java");
    s.put("events", events);
    s.put("duplicates", duplicates);
    s.put("stale", stale);
    s.put("patched", patched);
    s.put("unchecked", unchecked);
    s.put("mismatches", mismatches);
    ObjectNode objs = s.putObject("objects");
    objects.forEach(
        (uid, k) ->
            objs.putObject(uid)
                .put("name", k.name)
                .put("namespace", k.namespace)
                .put("sequence", k.sequence)
                .put("deleted", k.deleted));
    return JSON.writeValueAsString(s);
  }

  private static String env(String name, String fallback) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      if (fallback == null) {
        log(name + " is required");
        System.exit(1);
      }
      return fallback;
    }
    return v;
  }

  public static void main(String[] args) throws Exception {
    int expect = Integer.parseInt(env("CONSUMER_EXPECT", null));
    long timeoutSecs = Long.parseLong(env("CONSUMER_TIMEOUT_SECS", "60"));
    String topic = env("KAFKA_TOPIC", null);

    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, env("KAFKA_BOOTSTRAP", "localhost:9092"));
    props.put(ConsumerConfig.GROUP_ID_CONFIG, env("KAFKA_GROUP", "crbridge-java-consumer"));
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
    // Values as bytes, so a tombstone (a null value, `tombstones: true`) is skipped before
    // the CloudEvents deserializer sees it: it has no ce_* headers and is not an event.
    props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);

    Consumer c = new Consumer();
    long deadline = System.nanoTime() + Duration.ofSeconds(timeoutSecs).toNanos();
    log("reading topic " + topic + ", expecting " + expect + " events");
    try (KafkaConsumer<String, byte[]> kafka = new KafkaConsumer<>(props);
        CloudEventDeserializer events = new CloudEventDeserializer()) {
      kafka.subscribe(List.of(topic));
      while (c.events < expect && System.nanoTime() < deadline) {
        for (ConsumerRecord<String, byte[]> r : kafka.poll(Duration.ofMillis(200))) {
          if (r.value() == null) {
            continue; // tombstone
          }
          c.handle(events.deserialize(r.topic(), r.headers(), r.value()));
        }
        // Offsets are committed (auto commit) as the consumer goes; a restart in the same
        // group resumes after them. Its in-memory state would then start empty: a service
        // keeps that state durable, or bootstraps from a compacted topic (README).
      }
    }
    System.out.println(c.summary());
    if (c.events < expect) {
      log("timed out after " + timeoutSecs + "s waiting for " + (expect - c.events) + " more of " + expect + " events on " + topic);
    }
    System.exit(c.mismatches == 0 && c.events == expect ? 0 : 1);
  }
}
