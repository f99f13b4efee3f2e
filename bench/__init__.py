"""The proxy's benchmark: see bench/README.md; run it with bench/run."""
