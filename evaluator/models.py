"""Stored results of the engine and the jobs that produce them.

Image sets live in media files (paths relative to MEDIA_ROOT); rows hold the
statistics and the per-image predictions (a few KB, packed) that McNemar and the
robustness score need, so the ranking never reads image files.
"""

from __future__ import annotations

import numpy as np
from django.db import models
from django.utils import timezone

from leaderboard.models import Benchmark, Network


class UniversalSet(models.Model):
    benchmark = models.OneToOneField(Benchmark, on_delete=models.CASCADE, related_name="universal")
    file = models.CharField(max_length=300)
    source_network = models.ForeignKey(Network, null=True, on_delete=models.SET_NULL)
    count = models.PositiveIntegerField()
    xi = models.FloatField()
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)


class AdversarialDataset(models.Model):
    """adv(B): the gradient-adversarial images of one network, and B's own result."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="adversarial")
    file = models.CharField(max_length=300)
    epsilon = models.FloatField()
    step = models.FloatField()
    steps = models.PositiveIntegerField()
    success_rate = models.FloatField()
    whitebox_correct = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    vanished_fraction = models.FloatField(default=0.0)
    seconds = models.FloatField()
    # B's predictions on its own adversarial images (the matrix diagonal).
    predictions = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def prediction_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.predictions), dtype=np.uint8)


class AuditResult(models.Model):
    """The untargeted audit of one network (engine.audit): PGD with random restarts.

    Like AdversarialDataset it belongs to the network's model, not to any peer, so a
    re-validation keeps it. `predictions` per eval image: a wrong label the audit found
    at some ε up to `epsilon`, else the true label, so (predictions == labels) is the
    per-image correctness robust accuracy is recomputed from. `curve`: accuracy at
    each ε, [{"epsilon", "correct", "total", "low", "high", "steps", "restarts"}].
    """

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="audit")
    epsilon = models.FloatField()
    steps = models.PositiveIntegerField()
    restarts = models.PositiveIntegerField()
    eot_samples = models.PositiveIntegerField(default=1)
    correct = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    accuracy = models.FloatField()
    low = models.FloatField()
    high = models.FloatField()
    curve = models.JSONField(default=list)
    predictions = models.BinaryField()
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    def prediction_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.predictions), dtype=np.uint8)


class Evaluation(models.Model):
    """One network on one dataset: clean, universal, or another network's adv set."""

    class Kind(models.TextChoices):
        CLEAN = "clean"
        UNIVERSAL = "universal"
        # Universal perturbations fitted on this network itself (the same method as the
        # benchmark's universal set, which is fitted on the control only): issue 16.
        UNIVERSAL_OWN = "universal-own"
        ADVERSARIAL = "adversarial"

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="evaluations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # For kind=adversarial: whose attack (the column of the matrix).
    source = models.ForeignKey(
        Network, null=True, blank=True, on_delete=models.CASCADE, related_name="attacked_by"
    )
    correct = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    accuracy = models.FloatField()
    low = models.FloatField()
    high = models.FloatField()
    confusion = models.JSONField()
    predictions = models.BinaryField()
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["network", "kind"],
                condition=models.Q(source__isnull=True),
                name="one_evaluation_per_plain_dataset",
            ),
            models.UniqueConstraint(
                fields=["network", "source"],
                condition=models.Q(source__isnull=False),
                name="one_evaluation_per_adversarial_set",
            ),
        ]

    def prediction_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.predictions), dtype=np.uint8)


class Job(models.Model):
    class Kind(models.TextChoices):
        BUILD_BENCHMARK = "build-benchmark"
        BUILD_REFERENCE = "build-reference"
        UNIVERSAL = "universal"
        # An upload's validate + attack + cross in one sandbox job.
        EVALUATE = "evaluate"
        VALIDATE = "validate"
        ATTACK = "attack"
        CROSS = "cross"
        RANK = "rank"
        # Detection and vector space (issue 15): trusted models only.
        ANALYSE = "analyse"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="jobs")
    network = models.ForeignKey(
        Network, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    log = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set while running; the reaper requeues running jobs whose heartbeat went stale.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    peak_rss_mb = models.FloatField(null=True, blank=True)
    # Where the time went, as numbers (the log says the same in words):
    # {"sandbox": {"seconds", "peak_mb", "outcome", "warm"} of the last attempt,
    #  "phases": {phase: seconds} of an evaluate job}. Read through evaluator.selectors.
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "heartbeat_at"])]

    def __str__(self) -> str:
        target = self.network or self.benchmark
        return f"{self.kind} {target} ({self.state})"

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def append_log(self, line: str) -> None:
        self.log = (self.log + line.rstrip() + "\n")[-20000:]


class PeerFailure(models.Model):
    """A matrix cell that could not be computed because the peer misbehaved.

    Cross-evaluating an existing network (the peer) on a newer network's adversarial
    set runs the peer alone in its own sandbox child. When that child fails or overruns
    the peer is charged, not the newer network: the cell is recorded here, the peer is
    flagged and re-validated, and the newer network is ranked without it.
    """

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="peer_failures")
    source = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=16)  # the sandbox outcome: timeout, crash, ...
    reason = models.TextField()
    resolved = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.network} on adv({self.source}): {self.outcome}"


class Analysis(models.Model):
    """Issue 15: how detectable one image set is, and where it sits in image space.

    kind=basis (one per benchmark, no network): the clean eval images, with what every
    set is compared with (PCA of the train images, the detectors' clean scores, the
    Mahalanobis fit). kind=gradient: one network's adversarial set. kind=universal: the
    universal set. `detection` {detector: engine.detection.Detection.as_dict()},
    `vectorspace` engine.vectorspace.summarise() (basis: the PCA and detector summary).
    `file` holds the per-image arrays every figure is recomputed from. `fingerprint`
    names what it was computed from (control, discriminator, dataset, the set itself):
    a row whose fingerprint no longer matches is stale and recomputed.
    """

    class Kind(models.TextChoices):
        BASIS = "basis"
        GRADIENT = "gradient"
        UNIVERSAL = "universal"

    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="analyses")
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.CASCADE, related_name="analyses")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    fingerprint = models.CharField(max_length=64)
    detection = models.JSONField(default=dict, blank=True)
    vectorspace = models.JSONField(default=dict, blank=True)
    file = models.CharField(max_length=300, blank=True)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["network"], condition=models.Q(network__isnull=False),
                                    name="one_analysis_per_network"),
            models.UniqueConstraint(fields=["benchmark", "kind"], condition=models.Q(network__isnull=True),
                                    name="one_benchmark_analysis_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} analysis of {self.network or self.benchmark}"


class StageDuration(models.Model):
    """How long one stage took on this deployment: what time-left estimates come from
    (issue 14, evaluator.services.progress). A row per stage that ended by moving on:
    a network's status (queued ... cross-evaluating; only uploads time their queue, a
    reference waits there for the whole build's training) or a build step ("build:
    training" per reference, "build:universal", "build:reference" per reference's
    pipeline). Failed, cancelled and retried stages are not recorded: they say nothing
    about how long the stage takes. References and uploads are kept apart (the trusted
    references run beside each other; an upload runs alone in its sandbox).
    """

    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="+")
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_reference = models.BooleanField()
    stage = models.CharField(max_length=32)
    seconds = models.FloatField()
    finished_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["benchmark", "stage", "finished_at"])]

    def __str__(self) -> str:
        return f"{self.stage} of {self.network or self.benchmark}: {self.seconds:.1f} s"
