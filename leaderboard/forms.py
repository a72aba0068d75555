"""Forms of the pages. Validation of the archive itself lives in services.network_upload."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from leaderboard import model_cards
from leaderboard.model_cards import CardError
from leaderboard.services import DESCRIPTION_MAX, NAME_MAX


def size_limit_text() -> str:
    mb = settings.MAX_UPLOAD_BYTES / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 1 else f"{settings.MAX_UPLOAD_BYTES // 1024} KB"


class ModelCardForm(forms.Form):
    """The model card (leaderboard.model_cards checks every value: hostile input)."""

    paper_url = forms.CharField(
        label="Paper or code", required=False, max_length=model_cards.URL_MAX,
        widget=forms.URLInput(attrs={"placeholder": "https://arxiv.org/abs/…"}),
        help_text="Optional: a link to the paper or the code (http:// or https://).",
    )
    training_data = forms.CharField(
        label="Training data", required=False, max_length=model_cards.SHORT_MAX,
        help_text="Optional: what it was trained on, e.g. “MNIST train (60,000), eval split excluded”.",
    )
    architecture = forms.CharField(
        label="Framework / architecture", required=False, max_length=model_cards.SHORT_MAX,
        help_text="Optional: e.g. “Keras 3, 2 conv + 2 dense layers”.",
    )
    threat_norm = forms.ChoiceField(
        label="Threat model claimed", required=False,
        choices=[("", "none claimed"), *model_cards.NORMS.items()],
        help_text="Optional: the norm of the attacks the network is meant to resist.",
    )
    threat_epsilon = forms.CharField(
        label="Claimed ε", required=False, widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "0.3"}),
        help_text="Optional: the budget it claims to resist, in pixel units of [0, 1].",
    )
    description = forms.CharField(
        max_length=DESCRIPTION_MAX, required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional free text: the defense, how it was trained, caveats.",
    )

    def clean(self) -> dict:
        data = super().clean()
        try:
            self.card = model_cards.card_clean(**{k: data.get(k, "") for k in model_cards.FIELDS})
            data["description"] = model_cards.description_clean(data.get("description", ""))
        except CardError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        return data

    CARD_FIELDS = (*model_cards.FIELDS, "description")

    def card_fields(self) -> list[forms.BoundField]:
        """The card's fields, for templates that group them under their own heading."""
        return [self[name] for name in self.CARD_FIELDS]

    def other_fields(self) -> list[forms.BoundField]:
        return [f for f in self.visible_fields() if f.name not in self.CARD_FIELDS]

    @classmethod
    def from_network(cls, network, data=None) -> "ModelCardForm":
        initial = {k: getattr(network, k) for k in model_cards.FIELDS}
        initial["description"] = network.description
        return cls(data, initial=initial)


class UploadForm(ModelCardForm):
    field_order = ["name", "archive", "public", "benchmark", *model_cards.FIELDS, "description"]
    name = forms.CharField(max_length=NAME_MAX, help_text="Shown on the leaderboard.")
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
