from django.apps import AppConfig


class EvaluatorConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "evaluator"
    verbose_name = "Evaluation jobs"

    def ready(self) -> None:
        from evaluator import checks, signals  # noqa: F401 - system checks; the worker start-up reaper
