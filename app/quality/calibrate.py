"""The review threshold of ``X-Mask-Confidence``: the confidence under which a cut-out goes to a
person, calibrated on the quality set (``make quality`` prints it) and checked by leave-one-out.

A photo is *flawed* when its SAD is over :data:`FLAWED_ABOVE` (a person would retouch it). The
threshold is the midpoint between the most confident flawed photo and the next clean one above it:
every flawed photo falls under it, and as few clean ones as the ranking allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

FLAWED_ABOVE = 40.0  # SAD over which a cut-out needs retouching (the measure)
MARGIN = 0.05  # above the most confident flawed photo when no clean one lies above it


@dataclass(frozen=True)
class Check:
    threshold: float  # calibrated on every photo
    flawed: int  # photos with SAD over FLAWED_ABOVE
    clean_flagged: int  # clean photos under the threshold (on every photo)
    held_out_caught: int  # flawed photos under the threshold calibrated without them
    held_out_flagged: int  # clean photos under the threshold calibrated without them


def threshold(confidence: Mapping[str, float], sad: Mapping[str, float], flawed_above: float = FLAWED_ABOVE) -> float:
    """The review threshold for these photos (their confidence and SAD, by name)."""
    flawed = [confidence[n] for n in confidence if sad[n] > flawed_above]
    if not flawed:  # nothing to catch: flag only what is under the least confident clean photo
        return min(confidence.values())
    top = max(flawed)
    above = [confidence[n] for n in confidence if sad[n] <= flawed_above and confidence[n] > top]
    return round((top + min(above)) / 2, 3) if above else round(top + MARGIN, 3)


def check(confidence: Mapping[str, float], sad: Mapping[str, float], flawed_above: float = FLAWED_ABOVE) -> Check:
    """The threshold on every photo, and each photo judged by the threshold of the others."""
    level = threshold(confidence, sad, flawed_above)
    caught = flagged = 0
    for name in confidence:
        others = {n: c for n, c in confidence.items() if n != name}
        held = threshold(others, sad, flawed_above) if others else level
        under = confidence[name] < held
        if sad[name] > flawed_above:
            caught += under
        else:
            flagged += under
    return Check(level, sum(s > flawed_above for s in (sad[n] for n in confidence)),
                 sum(confidence[n] < level and sad[n] <= flawed_above for n in confidence), caught, flagged)
