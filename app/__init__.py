"""The shell of the platform: the command line, `xietong run`, the department simulator,
the sample data, the demo and the consumer-lag exporter.

Nothing imports this package but the console script (and the tests that drive it).
"""
