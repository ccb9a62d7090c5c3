"""What pruning buys in milliseconds on the deployment runtime: layer timings, the latency table built from
them, and the cost model that lets the planner aim at a measured latency speed-up."""
