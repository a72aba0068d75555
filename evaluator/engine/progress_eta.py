"""Time left, from stage durations recorded on this deployment (issue 14): arithmetic only.

A network's pipeline and a benchmark's build go through stages in a known order. Each
stage that ends is recorded with how long it took here (evaluator.services.progress);
the time left is then

    max(median(current stage) - time spent in it, FLOOR_S)     the stage running now
    + median(current stage) x (repeats of it still to come)     e.g. references left to train
    + sum over the stages still to come of median x repeats

Medians, not means: one stage that waited behind a busy machine or a retried job must
not move every estimate. A stage never timed here gives no number at all: the caller
says "no estimate yet" rather than guessing from another machine. When only a later
stage is untimed, the sum of the timed ones is a lower bound and is labelled as one
("at least ..."). A stage that has run past its median is not given a negative or a
zero: it gets FLOOR_S, and the text says it is taking longer than usual, or, when
nothing comes after it, that it is finishing.

No Django here (tests/test_engine_imports.py): plain dataclasses in, a dataclass out,
and one formatting helper every page, the API, the build console and `rank` share.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# The least time left shown for a stage that is still running: an estimate of 0 s (or
# less) while the work visibly goes on would be false.
FLOOR_S = 10.0
FIRST_RUN = "first run on this machine"


@dataclass(frozen=True)
class Step:
    """One stage of a pipeline or build: its recorded durations here, how many more times
    it runs (a build trains each reference in turn), and the words used for it."""

    name: str
    durations: tuple[float, ...] = ()
    count: int = 1

    @property
    def median(self) -> float | None:
        return float(statistics.median(self.durations)) if self.durations else None


@dataclass(frozen=True)
class Estimate:
    """Seconds left (None: no estimate, `reason` says why) and how to say it honestly."""

    seconds: float | None
    reason: str = FIRST_RUN
    # The running stage has taken longer than its median (its share is FLOOR_S).
    over: bool = False
    # ... and nothing comes after it: the work is finishing, however long it takes.
    finishing: bool = False
    # Not started yet (a queued reference waiting for its build): the time once it starts.
    waiting: bool = False
    # Later stages never timed here: `seconds` counts only the others (a lower bound).
    untimed: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return format_left(self)

    def as_dict(self) -> dict[str, object]:
        """The API's form: the same text the pages show, and the number behind it."""
        return {
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "text": self.text,
            "over": self.over,
            "lower_bound": bool(self.untimed),
        }


def estimate_left(
    *, current: Step | None, spent: float, later: Sequence[Step] = (), floor: float = FLOOR_S,
    waiting: bool = False,
) -> Estimate:
    """The time left when `current` has run for `spent` seconds and `later` follow.

    current None: no stage is running that has a duration of its own (between steps of
    a build, or waiting to start); the estimate is then the stages to come.
    """
    to_come = [step for step in later if step.count > 0]
    if current is not None and current.median is None:
        return Estimate(seconds=None)
    timed = [step for step in to_come if step.median is not None]
    untimed = tuple(dict.fromkeys(step.name for step in to_come if step.median is None))
    if current is None and not timed:
        return Estimate(seconds=None)
    seconds = sum(step.median * step.count for step in timed)  # type: ignore[operator]
    over = finishing = False
    if current is not None:
        median = current.median or 0.0
        over = spent > median
        seconds += max(median - max(spent, 0.0), floor) + median * max(current.count - 1, 0)
        finishing = over and current.count <= 1 and not to_come
    return Estimate(seconds=seconds, over=over, finishing=finishing, waiting=waiting and current is None,
                    untimed=untimed)


def format_duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 20 min': rounded as far as an estimate
    from a handful of medians deserves (10 s, then whole minutes)."""
    if seconds < 55:
        return f"about {max(10, _round_half_up(seconds / 10.0) * 10)} s"
    minutes = max(1, _round_half_up(seconds / 60.0))
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))  # round() rounds 2.5 to 2: "about 2 min" for 150 s


def format_left(estimate: Estimate) -> str:
    """The one wording of an estimate: 'about 3 min left', 'no estimate yet: ...'."""
    if estimate.seconds is None:
        return f"no estimate yet: {estimate.reason}"
    if estimate.finishing:
        return "finishing (a little longer than usual)" if estimate.over else "finishing"
    text = format_duration(estimate.seconds) + (" once it starts" if estimate.waiting else " left")
    if estimate.untimed:
        text = f"at least {text} (not timed on this machine yet: {', '.join(estimate.untimed)})"
    if estimate.over:
        text += ", this stage is taking a little longer than usual"
    return text
