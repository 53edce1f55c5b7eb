"""Training and study harness: models, methods, the accelerate loop, runs and their records."""
