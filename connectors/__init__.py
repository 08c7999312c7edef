"""Connectors: sources that read department systems into Kafka, and sinks that write out.

See ``connectors/README.md`` for what the package owns and guarantees.
"""

from pathlib import Path

#: The sample province's department connectors: one ``<name>.connector.yaml`` (where the
#: export is read) and one ``<name>.yaml`` (how its columns map to the canonical record)
#: for each department export.
DEPARTMENTS_DIR = Path(__file__).parent / "departments"
