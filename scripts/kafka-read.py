#!/usr/bin/env python3
"""Reads Kafka topics from their beginning with kafka-python and prints one JSON line per message.

The tests use it to read the relay's topics with a Kafka client that is not built on
librdkafka: an independent implementation of the protocol. Stops after --expect messages or
--timeout seconds.

    kafka-read.py --brokers 127.0.0.1:9092 --expect 10 framegate.user.events ...
"""
import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()

    consumer = KafkaConsumer(
        bootstrap_servers=args.brokers.split(","),
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    partitions = []
    deadline = time.monotonic() + args.timeout
    for topic in args.topics:
        found = None
        while found is None and time.monotonic() < deadline:
            found = consumer.partitions_for_topic(topic)
            if found is None:
                time.sleep(0.2)
        if found is None:
            print(f"kafka-read: topic {topic} not found", file=sys.stderr)
            return 1
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)

    count = 0
    while count < args.expect and time.monotonic() < deadline:
        for message in consumer:
            record = {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "key": message.key.decode() if message.key is not None else None,
                "value": message.value.decode() if message.value is not None else None,
                "headers": {k: v.decode() for k, v in (message.headers or [])},
            }
            print(json.dumps(record))
            count += 1
            if count >= args.expect:
                break
    consumer.close()
    if count < args.expect:
        print(f"kafka-read: {count} of {args.expect} messages", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
