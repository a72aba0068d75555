"""The revised rule now scores each network on its own half of a comparison by its worst
case there (evaluator.services.results.own_halves), so the reference scores fitted under
the previous reading are refitted at the next ranking (an upload, a rerun, or the admin's
"recompute" action), instead of being kept fixed."""

from django.db import migrations


def forget_reference_scores(apps, schema_editor) -> None:
    apps.get_model("leaderboard", "Benchmark").objects.update(reference_scores={})


class Migration(migrations.Migration):
    dependencies = [("leaderboard", "0008_progress_since")]

    operations = [migrations.RunPython(forget_reference_scores, migrations.RunPython.noop)]
