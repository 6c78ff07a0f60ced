"""What the tests run against: the book's own code, a local Hub, and the training script with probes."""
