"""What every layer may use: configuration, errors, the line format, units and names.

Nothing here imports OpenTelemetry or psutil, so the CLI can use it alone.
"""
