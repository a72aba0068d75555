from django.apps import AppConfig


class EvaluatorConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "evaluator"
    verbose_name = "Evaluation jobs"

    def ready(self) -> None:
        from evaluator import signals  # noqa: F401 - connects the worker start-up reaper
