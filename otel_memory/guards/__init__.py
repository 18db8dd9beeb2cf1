"""What watches: thresholds, leak suspects, deep capture, the previous run's death, the heap
profiler."""
