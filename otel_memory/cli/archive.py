"""``otel-memory archive``: gzip old daily logs now, as the monitor does once a day.

    otel-memory archive --log-dir logs --retention-days 30 --dry-run
"""

from __future__ import annotations

import argparse
import sys

from otel_memory.base.config import load_config
from otel_memory.base.retention import archive_old_logs


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expects a whole number of days >= 0, got {text!r}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``archive`` sub-command."""
    parser = commands.add_parser(
        "archive",
        help="gzip daily logs older than the retention",
        description="Compress memory_YYYYMMDD.log files older than --retention-days (by the "
        "date in the name) to .log.gz; delete archives only with --delete-archives-after-days.",
    )
    parser.add_argument("--log-dir", metavar="DIR", help="default: config (logs)")
    parser.add_argument("--retention-days", type=_days, metavar="N",
                        help="archive logs older than N days; 0 keeps everything "
                        "(default: config, 30)")
    parser.add_argument("--delete-archives-after-days", type=_days, metavar="N",
                        help="delete archives older than N days; 0 never deletes "
                        "(default: config, 0)")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration")
    parser.add_argument("--dry-run", action="store_true",
                        help="only say what would be done")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``archive``: 0 when every file was handled, 1 when some could not be."""
    monitor = load_config(args.config).monitor
    log_dir = args.log_dir if args.log_dir is not None else monitor.log_dir
    retention = monitor.retention_days if args.retention_days is None else args.retention_days
    delete_after = (
        monitor.delete_archives_after_days
        if args.delete_archives_after_days is None
        else args.delete_archives_after_days
    )
    try:
        result = archive_old_logs(log_dir, retention, delete_after, dry_run=args.dry_run)
    except FileNotFoundError:
        print(f"otel-memory: {log_dir}: no such directory", file=sys.stderr)
        return 2
    except NotADirectoryError:
        print(f"otel-memory: {log_dir}: not a directory", file=sys.stderr)
        return 2
    verb = "would archive" if args.dry_run else "archived"
    for path in result.archived:
        print(f"{verb} {path} -> {path.name}.gz")
    for path in result.deleted:
        print(f"{'would delete' if args.dry_run else 'deleted'} {path}")
    for error in result.errors:
        print(f"otel-memory: {error}", file=sys.stderr)
    print(
        f"{len(result.archived)} {verb}, {len(result.deleted)} deleted, "
        f"{len(result.kept)} kept (retention {retention} days"
        f"{f', archives deleted after {delete_after} days' if delete_after else ''})"
    )
    return 1 if result.errors else 0
