"""The ingestion fuzz suite (issue 12): seeded mutations of valid department exports,
run through the real connectors against the real broker, and counted.

* :mod:`tests.fuzz.generator` makes the records: valid rows of the shipped sample
  departments (:class:`app.samples.SampleGenerator`), each export in a format the
  connectors read (CSV in UTF-8 and GB18030, JSON Lines, Excel, rows of a SQL table,
  HTTP ingest batches), mutated by category — bad USCCs, impossible dates, odd money,
  control characters, invalid bytes, broken CSV structure, huge values, type confusions,
  lone surrogates and NaN, oversized bodies. Every record says what must become of it.
* :mod:`tests.fuzz.harness` writes them out, runs each format through its connector,
  reads the canonical topics and the dead-letter topic back and counts per category:
  in, published, dead-lettered, refused, missing, wrong, duplicated, unnamed, crashes, 5xx.

``make fuzz`` runs a large seeded run (``python -m tests.fuzz``);
``tests/integration/test_ingest_fuzz.py`` runs a few thousand records in ``make test``.
"""
