"""Forms of the pages. Validation of the archive itself lives in services.network_upload."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from leaderboard.services import DESCRIPTION_MAX, NAME_MAX


def size_limit_text() -> str:
    mb = settings.MAX_UPLOAD_BYTES / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 1 else f"{settings.MAX_UPLOAD_BYTES // 1024} KB"


class UploadForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, help_text="Shown on the leaderboard.")
    description = forms.CharField(
        max_length=DESCRIPTION_MAX, required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional: architecture, defense, training, a link to the paper.",
    )
    archive = forms.FileField(
        help_text="A TensorFlow SavedModel folder packed as .zip or .tar.gz (the folder may be at any depth).",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,.tar.gz,.tgz,application/zip,application/gzip"}),
    )
    public = forms.BooleanField(
        required=False, initial=True,
        help_text="Public networks appear on the leaderboard; private ones only to you.",
    )
    benchmark = forms.ChoiceField(required=False)

    def __init__(self, *args, benchmarks: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = benchmarks or [settings.DEFAULT_BENCHMARK]
        self.fields["benchmark"].choices = [(n, n) for n in names]
        self.fields["benchmark"].initial = (
            settings.DEFAULT_BENCHMARK if settings.DEFAULT_BENCHMARK in names else names[0]
        )
        if len(names) <= 1:
            self.fields["benchmark"].widget = forms.HiddenInput()
        self.fields["archive"].help_text += f" At most {size_limit_text()}."


class TokenForm(forms.Form):
    label = forms.CharField(max_length=100, required=False,
                            widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script"}))


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)
