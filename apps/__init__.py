"""Applications on top of the engine: retrieval over your own videos, the CPU demo, the benchmark, figures."""
