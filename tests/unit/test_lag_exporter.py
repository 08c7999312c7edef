"""The consumer-lag exporter's metrics, from a measurement (the broker side is covered by
tests/integration/test_monitoring.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from app.lag import GroupMembers, LagExporter, LagMeasurement, PartitionLag


def scrape(exporter: LagExporter) -> str:
    registry = CollectorRegistry()
    exporter.register(registry)
    return generate_latest(registry).decode()


def test_lag_is_the_end_offset_minus_the_committed_one_and_never_negative() -> None:
    assert PartitionLag("xietong.streams.dual-notice", "market.registrations", 0, 40, 55).lag == 15
    assert PartitionLag("g", "t", 0, committed=60, end=55).lag == 0


def test_a_scrape_shows_the_latest_measurement_per_group_topic_and_partition() -> None:
    exporter = LagExporter(admin=None)  # type: ignore[arg-type]  # never asked here
    exporter.latest = LagMeasurement(
        taken_at=0.0,
        partitions=(PartitionLag("xietong.streams.dual-notice", "market.registrations", 3, 7, 10),),
        groups=(GroupMembers("xietong.streams.dual-notice", "STABLE", 2),),
        end_offsets={("market.registrations", 3): 10, ("platform.dead-letter", 0): 4},
    )
    text = scrape(exporter)
    labels = 'group="xietong.streams.dual-notice",partition="3",topic="market.registrations"'
    assert f"xietong_consumer_lag{{{labels}}} 3.0" in text
    assert f"xietong_consumer_committed_offset{{{labels}}} 7.0" in text
    assert f"xietong_consumer_end_offset{{{labels}}} 10.0" in text
    assert (
        'xietong_consumer_group_members{group="xietong.streams.dual-notice",state="STABLE"} 2.0'
        in text
    )
    assert 'xietong_topic_end_offset{partition="0",topic="platform.dead-letter"} 4.0' in text


def test_without_a_current_measurement_no_lag_is_served_as_if_it_were_current() -> None:
    text = scrape(LagExporter(admin=None))  # type: ignore[arg-type]
    assert "xietong_consumer_lag{" not in text
