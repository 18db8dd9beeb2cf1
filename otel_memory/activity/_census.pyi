"""The heap census's compiled pass; see ``_census.c`` and ``otel_memory.census``."""

from collections.abc import Callable
from typing import Any

def tally(
    objects: Callable[[], list[Any]],
    chunk_size: int,
    between_chunks: Callable[[], object],
    plan: Callable[[type, Any], tuple[Callable[[Any], int] | None, int]],
    fallback: Callable[[Any], int],
    /,
) -> tuple[dict[type, tuple[int, int]], int, int]: ...
def instances(
    objects: Callable[[], list[Any]], types: tuple[type, ...], limit: int, /
) -> list[Any]: ...
def referrers(
    get_referrers: Callable[..., list[Any]], targets: tuple[Any, ...], limit: int, /
) -> tuple[list[Any], int]: ...
