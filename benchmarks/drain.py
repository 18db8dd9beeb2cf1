"""Where the events thread's time goes: each sink alone over the same recorded task events.

    .venv/bin/python benchmarks/drain.py [--rounds 5] [--tasks 5000]

One process: the SDK providers as ``opentelemetry-instrument`` sets them (exporters that drop),
then ``--tasks`` empty ``@traced_task`` runs whose START and END events are recorded instead of
drained. Each round then hands the recorded events, in batches as the pipeline makes them, to
each sink in turn and measures the thread's CPU (``time.thread_time``); the SDK's batch
processors are flushed between batches, outside the measurement, so their queues never fill
and drop. A bare SDK span, measured in the same rounds, is the yardstick. The last rows are the
whole drain (every sink of that setup through the real :class:`EventPipeline`), i.e. what
``benchmarks/overhead.py`` counts as the monitor's background share, minus the batch
processors' own threads. Medians over interleaved rounds.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from _common import install_providers, median, python_line

BARE = "bare SDK span (reference, µs per span)"
_BATCH = 1024  # below the log processor's queue (2048), so no record is dropped uncounted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="median of this many rounds")
    parser.add_argument("--tasks", type=int, default=5000, help="task runs (2 events each)")
    args = parser.parse_args(argv)
    providers = install_providers(logs=True)

    # After the providers, as opentelemetry-instrument orders it.
    from otel_memory import traced_task
    from otel_memory.activity.events import Event, EventPipeline, LoggerSink, Sink
    from otel_memory.activity.opentask import OpenTasks
    from otel_memory.base.config import ExportLogs
    from otel_memory.guards.lastrun import RunState
    from otel_memory.guards.runstate import RunStateFeed
    from otel_memory.runtime.runtime import get_runtime
    from otel_memory.sinks.dailylog import DailyLogSink, DailyLogWriter
    from otel_memory.sinks.histograms import HistogramSink, TaskHistograms
    from otel_memory.sinks.logbridge import OTelLogSink

    class Recorder:
        def __init__(self) -> None:
            self.events: list[Event] = []

        def write(self, batch: Sequence[Event]) -> None:
            self.events.extend(batch)

        def close(self) -> None:
            pass

    @traced_task("bench")
    def task() -> None:
        pass

    recorder = Recorder()
    runtime = get_runtime()
    runtime.events.set_sinks([recorder])
    for _ in range(args.tasks):
        task()
    runtime.events.set_sinks([])  # flushes into the recorder
    events = recorder.events
    tracer = providers.tracer.get_tracer("benchmark")

    with tempfile.TemporaryDirectory(prefix="otel-memory-drain-") as log_dir:
        run_state = RunState(log_dir)
        run_state.begin()
        daily = DailyLogSink(DailyLogWriter(log_dir))
        histograms = HistogramSink(TaskHistograms())
        sinks: dict[str, Sink] = {
            "LoggerSink (notices to the otel_memory logger)": LoggerSink(),
            "DailyLogSink (format + write)": daily,
            "RunStateFeed": RunStateFeed(run_state, OpenTasks()),
            "OTelLogSink, export_logs: events": OTelLogSink(ExportLogs.EVENTS),
            "OTelLogSink, export_logs: all": OTelLogSink(ExportLogs.ALL),
            "HistogramSink (2 records per END)": histograms,
        }
        common: list[Sink] = [LoggerSink(), daily, RunStateFeed(run_state, OpenTasks())]
        drains = {
            "whole drain, export_logs: events": [*common, OTelLogSink(ExportLogs.EVENTS),
                                                 histograms],
            "whole drain, export_logs: all": [*common, OTelLogSink(ExportLogs.ALL), histograms],
        }

        def through(sink: Sink) -> Callable[[], float]:
            def run() -> float:
                spent = 0.0
                for i in range(0, len(events), _BATCH):
                    batch = events[i : i + _BATCH]
                    started = time.thread_time()
                    sink.write(batch)
                    spent += time.thread_time() - started
                    providers.flush()
                return spent

            return run

        def drain(chosen: list[Sink]) -> Callable[[], float]:
            pipeline = EventPipeline()
            pipeline.set_sinks(chosen)

            def run() -> float:
                spent = 0.0
                for i in range(0, len(events), _BATCH):
                    for event in events[i : i + _BATCH]:
                        pipeline._queue.append(event)  # as put() does, without its thread
                    started = time.thread_time()
                    pipeline.flush()
                    spent += time.thread_time() - started
                    providers.flush()
                return spent

            return run

        def bare_spans() -> float:
            started = time.thread_time()
            for _ in range(len(events)):
                with tracer.start_as_current_span("bench"):
                    pass
            spent = time.thread_time() - started
            providers.flush()
            return spent

        contenders: dict[str, Callable[[], float]] = {
            BARE: bare_spans,
            **{name: through(sink) for name, sink in sinks.items()},
            **{name: drain(chosen) for name, chosen in drains.items()},
        }
        for run in contenders.values():  # warm-up: caches, lazy imports
            run()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                gc.collect()
                times[name].append(run() * 1e6 / len(events))
        run_state.end()
    print_table(args, times, len(events))
    return 0


def print_table(args: Any, times: dict[str, list[float]], events: int) -> None:
    """µs per event and per task, and the ratio to a bare span of the same round."""
    print(f"{python_line()}; {events:,} events ({events // 2:,} tasks), median of "
          f"{args.rounds} interleaved rounds, thread CPU")
    header = f"{'sink':<50} {'µs/event':>9} {'µs/task':>8} {'task/span':>9}"
    print()
    print(header)
    print("-" * len(header))
    bare = times.pop(BARE)
    print(f"{BARE:<50} {median(bare):>9.2f} {'':>8} {1:>9.2f}")
    for name, values in times.items():
        per_event = median(values)
        ratio = median([2 * v / b for v, b in zip(values, bare, strict=True)])
        print(f"{name:<50} {per_event:>9.2f} {2 * per_event:>8.2f} {ratio:>9.2f}")
    print()
    print("µs/task: two events (START, END) per task; task/span: that, over a bare span's CPU")
    print("in the same round. The whole drain adds the pipeline's own loop to its sinks.")


if __name__ == "__main__":
    sys.exit(main())
