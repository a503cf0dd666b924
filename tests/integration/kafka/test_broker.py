"""The session's broker is a real Kafka: a produced record reads back."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka_broker import KafkaBroker, read_topic


async def test_broker_round_trips_a_record(kafka: KafkaBroker) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("probe", num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("probe", b"v", key=b"k")
    finally:
        await producer.stop()
    records = await read_topic(kafka.bootstrap, "probe", lambda r: len(r) >= 1)
    assert [(r.key, r.value) for r in records] == [(b"k", b"v")]
