"""Forms for writing circulars: parsing and field errors; rules live in the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from circulars.models import Priority
from circulars.services import CircularData
from communities.models import Block, Community, PaperDistribution


class CircularForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=120)
    body = forms.CharField(
        label=_("Text"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 10}),
        help_text=_("Plain text. Line breaks are kept and web addresses become links."),
    )
    priority = forms.ChoiceField(
        label=_("Priority"),
        choices=Priority.choices,
        initial=Priority.NORMAL,
        widget=forms.RadioSelect,
    )
    audience = forms.ChoiceField(
        label=_("Send to"),
        choices=[("all", _("All blocks")), ("chosen", _("Chosen blocks"))],
        initial="all",
        widget=forms.RadioSelect,
    )
    blocks = forms.ModelMultipleChoiceField(
        label=_("Blocks"),
        queryset=Block.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    paper_distribution = forms.ChoiceField(
        label=_("Paper copies for this circular"),
        choices=[("", _("As the association usually does")), *PaperDistribution.choices],
        required=False,
        widget=forms.RadioSelect,
    )
    due_date = forms.DateField(
        label=_("Due date (optional)"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("The date by which households should have read it."),
    )

    def __init__(
        self,
        *args: Any,
        community: Community,
        block_ids: frozenset[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        blocks = Block.objects.filter(community=community)
        if block_ids is not None:
            blocks = blocks.filter(pk__in=block_ids)
            # Block leaders write for their own blocks only.
            self.fields["audience"].choices = [("chosen", _("Chosen blocks"))]  # type: ignore[attr-defined]
            self.fields["audience"].initial = "chosen"
        self.fields["blocks"].queryset = blocks  # type: ignore[attr-defined]

    def to_data(self) -> CircularData:
        data = self.cleaned_data
        all_blocks = data["audience"] == "all"
        return CircularData(
            title=data["title"],
            body=data["body"],
            priority=data["priority"],
            all_blocks=all_blocks,
            blocks=[] if all_blocks else list(data["blocks"]),
            due_date=data["due_date"],
            paper_distribution=data.get("paper_distribution") or "",
        )


class PublishForm(forms.Form):
    when = forms.ChoiceField(
        label=_("When"),
        choices=[("now", _("Publish now")), ("later", _("At a set time"))],
        initial="now",
        widget=forms.RadioSelect,
    )
    publish_at = forms.DateTimeField(
        label=_("Date and time"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M"],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("when") == "later":
            when = data.get("publish_at")
            if not when:
                self.add_error("publish_at", _("Choose the date and time."))
            elif when <= timezone.now():
                self.add_error("publish_at", _("Choose a time in the future, or publish now."))
        return data


class AttachmentForm(forms.Form):
    file = forms.FileField(
        label=_("Add a photo or PDF"),
        help_text=_("JPEG, PNG, WebP or PDF, up to 20 MB."),
    )
