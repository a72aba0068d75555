"""Flags: why a network's level is not to be trusted (SPEC §2 "Flags"), decided here only.

AutoAttack-style sanity checks. Each rule is a pure function of the evidence the
pipeline measured (accuracies with intervals, the two full determinism passes, the
noise check) and returns a Flag with one plain-words sentence, numbers included, or
None. The services store the names on Network.flags and the sentences beside them; a
flagged network keeps its level, but the badge and its page say it is not trusted.

Thresholds, and why:
- gradient masking: a transfer set (another network's adversarial images, made without
  this network's gradients) leaves it *significantly* less accurate than its own
  white-box attack, i.e. the transfer's whole 95% interval lies below the white-box
  interval; a white-box attack should be the stronger one (Carlini et al. 2019, "On
  evaluating adversarial robustness"; AutoAttack's flags). Or the untargeted audit does
  so by far: beyond the intervals, by more than AUDIT_GAP (10 points) and leaving less
  than AUDIT_RATIO (half) of the targeted figure. The audit is a stronger threat model
  than a targeted attack towards one random class, so an honest network always loses
  some accuracy to it: measured on mnist-5k, an undefended CNN 1.5% -> 0% and the
  adversarially trained reference (scale 0.4) 82.6% -> 58.7% (ratio 0.71), while the
  noise reference's 52% -> 2% (issue 12) is the misled attack this flag is for. Or the
  attack's gradients were exactly zero on more than half the images (VANISHED_THRESHOLD).
- non-deterministic: two full passes over the eval images, batches of 1000 in order and
  batches of 37 in a shuffled order, disagree on any prediction. Float rounding differs
  between batch sizes, so a flip only counts when the two passes' log-probabilities for
  that image differ by more than DETERMINISM_TOLERANCE (rounding is ~1e-6).
- memorisation: accuracy drops by more than MEMORISATION_DROP (5 points) and beyond the
  intervals under uniform noise of at most one pixel step (1/255), drawn fresh per
  evaluation. A real classifier loses a fraction of a point to it (measured: the tiny
  test CNN moves by < 0.5 points); a table keyed on exact pixels collapses to chance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from evaluator.engine.metrics import Accuracy, interval_below

GRADIENT_MASKING = "gradient-masking"
NONDETERMINISTIC = "non-deterministic"
MEMORISATION = "memorisation"
PROBABILITIES = "probabilities"
LOW_ACCURACY = "low-accuracy"
FAILED_LATER = "failed-later-evaluation"
FLAGS = (GRADIENT_MASKING, NONDETERMINISTIC, MEMORISATION, PROBABILITIES, LOW_ACCURACY, FAILED_LATER)

# Short descriptions, for places without the measured numbers (badge titles, legends).
DESCRIPTIONS: dict[str, str] = {
    GRADIENT_MASKING: "gradient masking suspected: a weaker or different attack beats its own white-box attack",
    NONDETERMINISTIC: "not deterministic: two passes over the same images gave different answers",
    MEMORISATION: "memorisation suspected: accuracy collapses under invisible random noise",
    PROBABILITIES: "outputs probabilities, not logits (saturated probabilities can hide gradients)",
    LOW_ACCURACY: "clean accuracy below twice chance",
    FAILED_LATER: "failed a later evaluation on a newer network's adversarial images",
}

VANISHED_THRESHOLD = 0.5
AUDIT_GAP = 0.10
AUDIT_RATIO = 0.5
DETERMINISM_TOLERANCE = 1e-4
# The determinism passes: (batch size, shuffled?) each.
DETERMINISM_PASSES: tuple[tuple[int, bool], ...] = ((1000, False), (37, True))
MEMORISATION_DROP = 0.05
NOISE_AMPLITUDE = 1.0 / 255.0


@dataclass(frozen=True)
class Flag:
    name: str
    note: str  # one plain sentence with the numbers behind it


@dataclass(frozen=True)
class Evidence:
    """What the flags are decided on; None means not measured (that rule stays quiet)."""

    num_classes: int
    clean: Accuracy | None = None
    whitebox: Accuracy | None = None
    vanished_fraction: float = 0.0
    audit: Accuracy | None = None
    # Accuracy on other networks' adversarial sets, by network name (the services pass
    # only sets it does worse on than on its own attack: no other set can flag it).
    transfers: Mapping[str, Accuracy] = field(default_factory=dict)
    probe_deterministic: bool = True
    disagreements: int | None = None  # images whose prediction differed between the passes
    compared: int | None = None  # images in each pass
    noise_clean: Accuracy | None = None  # accuracy without, and with, the 1/255 noise (same pass)
    noise_noisy: Accuracy | None = None
    outputs_probabilities: bool = False
    failures: int = 0  # PeerFailure rows: later evaluations it failed


def pct(acc: Accuracy) -> str:
    """"52.0% (49.8–54.2%)": a value with its 95% interval, as on the pages."""
    return f"{acc.value * 100:.1f}% ({acc.low * 100:.1f}–{acc.high * 100:.1f}%)"


def audit_beats(audit: Accuracy, whitebox: Accuracy) -> bool:
    """The untargeted audit beats the targeted attack by far (see the module docstring)."""
    return (interval_below(audit, whitebox) and whitebox.value - audit.value > AUDIT_GAP
            and audit.value < AUDIT_RATIO * whitebox.value)


def gradient_masking(e: Evidence) -> Flag | None:
    if e.whitebox is not None:
        below = [(acc.value, f"the attack of {name} (a transfer attack, blind to its gradients)", acc)
                 for name, acc in e.transfers.items() if interval_below(acc, e.whitebox)]
        if e.audit is not None and audit_beats(e.audit, e.whitebox):
            below.append((e.audit.value, "the untargeted audit attack", e.audit))
        below.sort(key=lambda t: t[0])
        if below:
            _, what, acc = below[0]
            more = f" (and {len(below) - 1} other attack{'s' if len(below) > 2 else ''})" if len(below) > 1 else ""
            return Flag(GRADIENT_MASKING, (
                f"{what[0].upper()}{what[1:]}{more} leaves it {pct(acc)} accurate, significantly less than the "
                f"{pct(e.whitebox)} its own targeted white-box attack leaves: that attack overstates its "
                "robustness (gradient masking or an attack it was shaped to resist)."
            ))
    if e.vanished_fraction > VANISHED_THRESHOLD:
        return Flag(GRADIENT_MASKING, (
            f"The attack's gradients were exactly zero on {e.vanished_fraction * 100:.0f}% of the images, so it "
            "could not move them: gradient masking suspected."
        ))
    return None


def non_deterministic(e: Evidence) -> Flag | None:
    if e.disagreements:
        (big, _), (small, _) = DETERMINISM_PASSES
        return Flag(NONDETERMINISTIC, (
            f"Two full passes over the eval images (batches of {big} in order, batches of {small} shuffled) "
            f"disagree on {e.disagreements} of {e.compared} predictions: its answers depend on chance or on "
            "the batch, so every attack on it averages over several passes."
        ))
    if not e.probe_deterministic:
        return Flag(NONDETERMINISTIC, (
            "Two passes over the same probe images gave different outputs: its answers depend on chance, so "
            "every attack on it averages over several passes."
        ))
    return None


def memorisation(e: Evidence) -> Flag | None:
    clean, noisy = e.noise_clean, e.noise_noisy
    if clean is None or noisy is None or clean.total == 0 or noisy.total == 0:
        return None
    if clean.value - noisy.value > MEMORISATION_DROP and interval_below(noisy, clean):
        return Flag(MEMORISATION, (
            f"Accuracy falls from {pct(clean)} to {pct(noisy)} when every pixel moves by at most 1/255 "
            "(invisible random noise a real classifier ignores): it looks like answers keyed on the exact "
            "eval images."
        ))
    return None


def probabilities(e: Evidence) -> Flag | None:
    if e.outputs_probabilities:
        return Flag(PROBABILITIES, (
            "It outputs probabilities, not logits: saturated probabilities can hide the gradients attacks "
            "follow (the attacks use log-probabilities, clipped)."
        ))
    return None


def low_accuracy(e: Evidence) -> Flag | None:
    if e.clean is not None and e.clean.total and e.clean.value < 2.0 / e.num_classes:
        return Flag(LOW_ACCURACY, (
            f"Clean accuracy {pct(e.clean)} is below twice chance ({200.0 / e.num_classes:.0f}%): "
            "robustness of a network that does not classify means little."
        ))
    return None


def failed_later(e: Evidence) -> Flag | None:
    if e.failures:
        times = "once" if e.failures == 1 else f"{e.failures} times"
        return Flag(FAILED_LATER, (
            f"It failed {times} when evaluated on a newer network's adversarial images (crash or overrun), "
            "so part of its matrix row was not measured."
        ))
    return None


RULES = (gradient_masking, non_deterministic, memorisation, probabilities, low_accuracy, failed_later)


def decide(evidence: Evidence) -> list[Flag]:
    """Every flag that holds, in FLAGS order."""
    return [flag for rule in RULES if (flag := rule(evidence)) is not None]


def untrusted(flags: Iterable[str]) -> bool:
    """Any flag makes the level untrusted (it is kept, but the badge and page say so)."""
    return any(True for _ in flags)


def prediction_disagreements(first: np.ndarray, second: np.ndarray, tolerance: float = DETERMINISM_TOLERANCE) -> int:
    """Images whose predicted class differs between two passes of log-probabilities
    ([n, classes] each, same image order), counting only flips the outputs really moved
    for (more than `tolerance`), not near-ties that float rounding tips over."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"passes of different shapes: {first.shape} vs {second.shape}")
    flipped = first.argmax(axis=1) != second.argmax(axis=1)
    # A NaN in one pass and not the other is a difference too.
    moved = ~np.isclose(first, second, rtol=0.0, atol=tolerance, equal_nan=True).all(axis=1)
    return int(np.count_nonzero(flipped & moved))


def imperceptible_noise(x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """x + uniform noise of at most one pixel step (1/255), clipped to [0, 1]; drawn from a
    fresh unseeded generator unless one is given, so nobody can train on the noisy images."""
    rng = rng or np.random.default_rng()
    noise = rng.uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, size=np.shape(x)).astype(np.float32)
    return np.clip(np.asarray(x, np.float32) + noise, 0.0, 1.0)
