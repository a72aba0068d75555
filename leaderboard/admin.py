"""Django admin: the operator's console (reruns, ranking, references, jobs)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from evaluator.models import AdversarialDataset, Evaluation, Job, PeerFailure, StageDuration, UniversalSet
from evaluator.services import lifecycle
from leaderboard import services
from leaderboard.models import ApiToken, Benchmark, Network


@admin.register(Benchmark)
class BenchmarkAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "progress", "stage", "eval_size", "epsilon", "ranked_at")
    readonly_fields = ("ladder", "ranked_at", "created_at")
    actions = ["recompute_ranking", "rerun_all"]

    @admin.action(description="Recompute the ranking (ladder, levels, scores)")
    def recompute_ranking(self, request: HttpRequest, queryset: QuerySet[Benchmark]) -> None:
        for bench in queryset:
            lifecycle.benchmark_recompute(benchmark=bench)
        self.message_user(request, f"ranking queued for {queryset.count()} benchmark(s)")

    @admin.action(description="Rerun every network (asks for confirmation)")
    def rerun_all(self, request: HttpRequest, queryset: QuerySet[Benchmark]) -> HttpResponse | None:
        if request.POST.get("confirmed") == "yes":
            count = sum(lifecycle.benchmark_rerun_all(benchmark=b) for b in queryset)
            self.message_user(request, f"{count} network(s) queued for a full rerun", messages.WARNING)
            return None
        networks = Network.objects.filter(benchmark__in=queryset).exclude(archive="").count()
        return TemplateResponse(
            request,
            "admin/confirm_rerun_all.html",
            {
                **self.admin_site.each_context(request),
                "title": "Rerun every network?",
                "queryset": queryset,
                "networks": networks,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


class JobInline(admin.TabularInline):
    model = Job
    extra = 0
    fields = ("kind", "state", "attempts", "seconds", "created_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ("name", "benchmark", "owner", "is_reference", "is_public", "status", "progress",
                    "level", "score", "created_at")
    list_filter = ("benchmark", "status", "is_reference", "is_public")
    search_fields = ("name", "owner__username")
    readonly_fields = ("archive", "archive_bytes", "info", "flags", "params", "report", "level", "score",
                       "deciding_rung", "created_at", "updated_at", "ranked_at")
    inlines = [JobInline]
    actions = ["rerun", "rebuild_reference"]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        # Staff see at once why uploads are waiting, and which peers failed later.
        from evaluator.services.sandboxing import isolation_problem

        if problem := isolation_problem():
            messages.error(request, f"Evaluation sandbox unavailable: {problem}. Uploads wait until "
                           "bubblewrap can run (apt-get install bubblewrap).")
        elif not settings.SANDBOX_ISOLATION:
            messages.warning(request, "SANDBOX_ISOLATION is off: uploads run without bubblewrap (development only).")
        if failed := PeerFailure.objects.filter(resolved=False).count():
            messages.warning(request, f"{failed} network(s) failed a later evaluation as a peer and are being "
                             "re-validated; see Peer failures.")
        return super().changelist_view(request, extra_context)

    @admin.action(description="Rerun: regenerate the attack and every evaluation touching it")
    def rerun(self, request: HttpRequest, queryset: QuerySet[Network]) -> None:
        for network in queryset:
            lifecycle.network_rerun(network=network)
        self.message_user(request, f"{queryset.count()} network(s) queued for a rerun")

    @admin.action(description="Rebuild reference (retrain from its recipe)")
    def rebuild_reference(self, request: HttpRequest, queryset: QuerySet[Network]) -> None:
        refs = [n for n in queryset if n.is_reference]
        for network in refs:
            lifecycle.reference_rebuild_enqueue(network)
        skipped = queryset.count() - len(refs)
        self.message_user(request, f"{len(refs)} reference(s) queued for rebuilding"
                          + (f"; {skipped} upload(s) skipped" if skipped else ""))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("pk", "kind", "network", "benchmark", "state", "attempts", "duration_s", "peak_rss_mb",
                    "worker", "created_at")
    list_filter = ("state", "kind", "benchmark")
    readonly_fields = ("kind", "benchmark", "network", "attempts", "log", "worker", "created_at",
                       "started_at", "finished_at", "heartbeat_at", "seconds", "peak_rss_mb")
    actions = ["cancel"]

    @admin.display(description="duration (s)")
    def duration_s(self, job: Job) -> str:
        return f"{job.seconds:.1f}" if job.seconds is not None else "-"

    @admin.action(description="Cancel (queued or running)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            lifecycle.job_cancel(job=job)
        self.message_user(request, f"{queryset.count()} job(s) cancelled")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "label", "created_at", "revoked_at")
    readonly_fields = ("key",)
    actions = ["revoke"]

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.token_revoke(token=token)


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("network", "kind", "source", "accuracy", "low", "high", "created_at")
    list_filter = ("kind",)
    exclude = ("predictions",)


admin.site.register(AdversarialDataset, list_display=("network", "success_rate", "total", "seconds"),
                    exclude=("predictions",))
admin.site.register(UniversalSet, list_display=("benchmark", "count", "xi", "seconds"))


@admin.register(PeerFailure)
class PeerFailureAdmin(admin.ModelAdmin):
    """Cells a peer could not compute: the peer was flagged and re-validated."""

    list_display = ("network", "source", "outcome", "resolved", "created_at")
    list_filter = ("outcome", "resolved")
    readonly_fields = ("network", "source", "outcome", "reason", "created_at")


@admin.register(StageDuration)
class StageDurationAdmin(admin.ModelAdmin):
    """The recorded stage times that time-left estimates are the medians of: staff can
    see why an estimate says what it says, and delete an outlier (a stage that ran on an
    overloaded machine) so it stops pulling the median."""

    list_display = ("stage", "benchmark", "network", "is_reference", "seconds", "finished_at")
    list_filter = ("benchmark", "is_reference", "stage")
    readonly_fields = ("benchmark", "network", "is_reference", "stage", "seconds", "finished_at")
    date_hierarchy = "finished_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from finished stages only
