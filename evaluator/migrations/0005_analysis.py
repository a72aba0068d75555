# Issue 15: detection and vector-space analysis of each image set.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('evaluator', '0004_audit_result'),
        ('leaderboard', '0004_robust_accuracy'),
    ]

    operations = [
        migrations.AlterField(
            model_name='job',
            name='kind',
            field=models.CharField(choices=[('build-benchmark', 'Build Benchmark'), ('build-reference', 'Build Reference'), ('universal', 'Universal'), ('evaluate', 'Evaluate'), ('validate', 'Validate'), ('attack', 'Attack'), ('cross', 'Cross'), ('rank', 'Rank'), ('analyse', 'Analyse')], max_length=24),
        ),
        migrations.CreateModel(
            name='Analysis',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('basis', 'Basis'), ('gradient', 'Gradient'), ('universal', 'Universal')], max_length=16)),
                ('fingerprint', models.CharField(max_length=64)),
                ('detection', models.JSONField(blank=True, default=dict)),
                ('vectorspace', models.JSONField(blank=True, default=dict)),
                ('file', models.CharField(blank=True, max_length=300)),
                ('seconds', models.FloatField(default=0.0)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('benchmark', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='analyses', to='leaderboard.benchmark')),
                ('network', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='analyses', to='leaderboard.network')),
            ],
            options={
                'constraints': [models.UniqueConstraint(condition=models.Q(('network__isnull', False)), fields=('network',), name='one_analysis_per_network'), models.UniqueConstraint(condition=models.Q(('network__isnull', True)), fields=('benchmark', 'kind'), name='one_benchmark_analysis_per_kind')],
            },
        ),
    ]
