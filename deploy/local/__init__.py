"""The local stack on loopback: Kafka, the schema registry, PostgreSQL, Prometheus."""
