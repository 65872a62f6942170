"""Forms: input parsing and field errors only. Rules live in the services."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from communities.models import (
    Block,
    Community,
    DeliveryMode,
    MemberKind,
    PaperDistribution,
    RoleKind,
)


def form_errors_add(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form: on its fields where they exist."""
    if hasattr(error, "error_dict"):
        for field, items in error.message_dict.items():
            form.add_error(field if field in form.fields else None, items)
    else:
        form.add_error(None, error.messages)


class BlockForm(forms.Form):
    name = forms.CharField(label=_("Block name"), max_length=50)


class HouseholdForm(forms.Form):
    label = forms.CharField(
        label=_("Household name"),
        max_length=60,
        help_text=_("As it appears on the board, for example 山田 or 3班-5."),
    )
    block = forms.ModelChoiceField(
        label=_("Block"), queryset=Block.objects.none(), empty_label=None
    )
    delivery_mode = forms.ChoiceField(
        label=_("How they receive circulars"),
        choices=DeliveryMode.choices,
        widget=forms.RadioSelect,
        initial=DeliveryMode.PAPER,
    )
    address = forms.CharField(label=_("Address (optional)"), max_length=200, required=False)
    phone = forms.CharField(label=_("Phone (optional)"), max_length=30, required=False)
    helper_note = forms.CharField(
        label=_("Note for helpers (optional)"),
        max_length=300,
        required=False,
        help_text=_("For example: please hand it over in person, the bell does not work."),
    )

    def __init__(self, *args: object, community: Community, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["block"].queryset = Block.objects.filter(community=community)  # type: ignore[attr-defined]


class RosterUploadForm(forms.Form):
    file = forms.FileField(
        label=_("Roster file (CSV)"),
        help_text=_("UTF-8 or Shift_JIS. Columns: 世帯名, 班, 住所, 電話, 配布方法, 備考."),
    )


class JoinCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code on the card"),
        max_length=20,
        help_text=_("8 letters and digits, for example ABCD-EFGH."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )


class JoinForm(forms.Form):
    display_name = forms.CharField(
        label=_("Your name"),
        max_length=60,
        required=False,
        help_text=_(
            "How others in the association see you. You may leave it empty: we write 家族."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    kind = forms.ChoiceField(
        label=_("You are"),
        choices=MemberKind.choices,
        initial=MemberKind.RESIDENT,
        widget=forms.RadioSelect,
    )
    consent = forms.BooleanField(
        label=_("I agree to the use of the roster as described above."),
        required=True,
        error_messages={"required": _("Please agree to how the roster is used.")},
    )


class RoleForm(forms.Form):
    email = forms.EmailField(label=_("Email address"))
    name = forms.CharField(label=_("Name"), max_length=60, required=False)
    role = forms.ChoiceField(label=_("Role"), choices=RoleKind.choices)
    block = forms.ModelChoiceField(
        label=_("Block (for block leaders and helpers)"),
        queryset=Block.objects.none(),
        required=False,
    )

    def __init__(self, *args: object, community: Community, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["block"].queryset = Block.objects.filter(community=community)  # type: ignore[attr-defined]


class CommunityForm(forms.Form):
    name = forms.CharField(label=_("Association name"), max_length=100)
    slug = forms.CharField(
        label=_("Short name for links"),
        max_length=50,
        help_text=_("Lower-case letters, digits and hyphens, for example sakura-cho."),
    )
    contact = forms.CharField(label=_("Contact (optional)"), max_length=200, required=False)


class PreferenceForm(forms.Form):
    large_text = forms.BooleanField(required=False)
    high_contrast = forms.BooleanField(required=False)
    setting = forms.ChoiceField(
        choices=[("large_text", "large_text"), ("high_contrast", "high_contrast")]
    )


class CommunitySettingsForm(forms.Form):
    name = forms.CharField(label=_("Association name"), max_length=100)
    contact = forms.CharField(label=_("Contact (optional)"), max_length=200, required=False)
    paper_distribution = forms.ChoiceField(
        label=_("Paper copies"), choices=PaperDistribution.choices, widget=forms.RadioSelect
    )
    allow_block_leader_posts = forms.BooleanField(
        label=_("Block leaders may post circulars for their own blocks"), required=False
    )
    quiet_start = forms.TimeField(
        label=_("Quiet hours from"), widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )
    quiet_end = forms.TimeField(
        label=_("Quiet hours until"),
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        help_text=_("Nothing but urgent circulars is sent in quiet hours; the rest waits."),
    )
    reminder_days = forms.RegexField(
        label=_("Reminders: days before the due date"),
        regex=r"^\s*\d{1,2}(\s*[,、]\s*\d{1,2})*\s*$",
        help_text=_("For example 2,0: two days before and on the day."),
        error_messages={"invalid": _("Write numbers separated by commas, for example 2,0.")},
    )
    ladder_important = forms.RegexField(
        label=_("Important circulars: minutes until email, block leader, chair"),
        regex=r"^\s*\d{1,5}\s*,\s*\d{1,5}\s*,\s*\d{1,5}\s*$",
        error_messages={"invalid": _("Write three numbers, for example 30,60,120.")},
    )
    ladder_urgent = forms.RegexField(
        label=_("Urgent circulars: minutes until email, block leader, chair"),
        regex=r"^\s*\d{1,5}\s*,\s*\d{1,5}\s*,\s*\d{1,5}\s*$",
        error_messages={"invalid": _("Write three numbers, for example 5,10,20.")},
    )
    digest_hour = forms.IntegerField(
        label=_("Daily summary at (hour, 0–23)"), min_value=0, max_value=23
    )
    roster_purpose = forms.CharField(
        label=_("Purpose of the roster (shown to residents before they agree)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
    )


class ContactForm(forms.Form):
    email = forms.EmailField(
        label=_("Email for circulars (optional)"),
        required=False,
        help_text=_("We send new circulars and reminders there, with a link to confirm."),
    )
    notify_mode = forms.ChoiceField(
        label=_("How often"),
        choices=[("instant", _("At once")), ("digest", _("One summary a day"))],
        widget=forms.RadioSelect,
        help_text=_("Urgent circulars always come at once."),
    )
