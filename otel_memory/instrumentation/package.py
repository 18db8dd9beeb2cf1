"""What the memory instrumentor needs installed, in requirements syntax (checked by
``opentelemetry-instrument`` before it loads the instrumentor)."""

_instruments = ("psutil >= 5.9",)
