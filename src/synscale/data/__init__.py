"""Real datasets, synscale shards and manifests, nested class-balanced subsets."""
