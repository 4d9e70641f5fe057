"""Stand-in upstream servers used by tests and benchmarks."""
