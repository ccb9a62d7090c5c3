"""What a model costs (params, FLOPs, size, latency) and the tables/plots that compare models."""
