"""Times and durations as operators type them: ``30d``, ``12h``, ``2024-05-01``, ``2024-05-01T12:00Z``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from guard.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str, *, param: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w``."""
    match = _DURATION.match(text or "")
    if not match:
        raise BadInput(
            f"{param}: expected a duration such as 30d, 12h, 15m or 90s (got {text!r})", param=param
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str, *, param: str = "time", now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC when no zone is given), or a duration meaning that long ago."""
    now = now or datetime.now(timezone.utc)
    if _DURATION.match(text or ""):
        return now - parse_duration(text, param=param)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise BadInput(
            f"{param}: expected an ISO date/time (2024-05-01, 2024-05-01T12:00Z) or a duration "
            f"such as 30d (got {text!r})",
            param=param,
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
