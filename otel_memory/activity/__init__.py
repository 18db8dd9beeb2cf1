"""What happened: tasks and their spans, the event pipeline, the peak sampler, the heap census."""
