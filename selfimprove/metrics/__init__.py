"""Metrics over sets of texts and answers: diversity, quality, complexity, embeddings, and the collapse alarms that
read them. Pure functions on rows and texts; the monitor stage decides what to measure each round."""
