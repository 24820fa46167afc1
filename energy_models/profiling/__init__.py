"""The profiling harness that measures an LLM over a grid, and its inference backends."""
