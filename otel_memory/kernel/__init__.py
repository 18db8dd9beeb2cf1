"""What the kernel says: memory readings (``/proc``, psutil) and cgroup limits."""
