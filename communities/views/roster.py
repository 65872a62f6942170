"""Officer and block-leader pages: blocks, households, roster import/export, invite cards."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from communities import roster_csv, services
from communities.decorators import community_view, request_user
from communities.forms import BlockForm, HouseholdForm, RosterUploadForm, form_errors_add
from communities.invite_cards import invite_cards_pdf
from communities.models import DeliveryMode, RosterImport
from communities.params import int_param
from communities.selectors import (
    Access,
    block_get_visible,
    blocks_visible,
    household_get_visible,
    household_list_get,
    households_visible,
)


def _pdf_response(data: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@community_view(staff=True)
def dashboard(request: HttpRequest, access: Access) -> HttpResponse:
    blocks = blocks_visible(access=access)
    return render(request, "communities/dashboard.html", {"access": access, "blocks": blocks})


@community_view(staff=True)
@require_http_methods(["GET", "POST"])
def block_list(request: HttpRequest, access: Access) -> HttpResponse:
    form = BlockForm(request.POST or None)
    if request.method == "POST":
        if not access.is_officer:
            raise Http404
        if form.is_valid():
            try:
                block = services.block_create(
                    community=access.community, name=form.cleaned_data["name"]
                )
            except ValidationError as error:
                form_errors_add(form, error)
            else:
                messages.success(request, _("Block %(name)s was added.") % {"name": block.name})
                return redirect("communities:block_list", slug=access.community.slug)
    blocks = blocks_visible(access=access)
    return render(
        request, "communities/block_list.html", {"access": access, "blocks": blocks, "form": form}
    )


@community_view(staff=True, roster=True)
def block_detail(request: HttpRequest, access: Access, block_id: int) -> HttpResponse:
    block = block_get_visible(access=access, block_id=block_id)
    households = households_visible(access=access, block_id=block.pk)
    return render(
        request,
        "communities/block_detail.html",
        {
            "access": access,
            # Not "block": inside {% block %} Django's template engine shadows that name.
            "current_block": block,
            "households": households,
            "form": BlockForm(initial={"name": block.name}),
        },
    )


@community_view(officer=True)
@require_POST
def block_rename(request: HttpRequest, access: Access, block_id: int) -> HttpResponse:
    block = block_get_visible(access=access, block_id=block_id)
    form = BlockForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(_("Enter the block's name."))
        services.block_rename(block=block, name=form.cleaned_data["name"])
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("The block was renamed."))
    return redirect("communities:block_detail", slug=access.community.slug, block_id=block.pk)


@community_view(officer=True)
@require_POST
def block_delete(request: HttpRequest, access: Access, block_id: int) -> HttpResponse:
    block = block_get_visible(access=access, block_id=block_id)
    try:
        services.block_delete(block=block)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("communities:block_detail", slug=access.community.slug, block_id=block.pk)
    messages.success(request, _("The block was removed."))
    return redirect("communities:block_list", slug=access.community.slug)


@community_view(officer=True)
@require_POST
def block_move(request: HttpRequest, access: Access, block_id: int) -> HttpResponse:
    block = block_get_visible(access=access, block_id=block_id)
    services.block_move(block=block, direction=-1 if request.POST.get("direction") == "up" else 1)
    return redirect("communities:block_list", slug=access.community.slug)


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def invite_cards(request: HttpRequest, access: Access, block_id: int) -> HttpResponse:
    """Printing a block's cards issues new ones: every earlier card of the block stops working."""
    block = block_get_visible(access=access, block_id=block_id)
    if not access.can_issue_invites(block.pk):
        raise Http404
    if request.method == "POST":
        cards = services.household_invites_issue_for_block(
            block=block, created_by=request_user(request)
        )
        if not cards:
            messages.error(request, _("This block has no households yet."))
            return redirect(
                "communities:invite_cards", slug=access.community.slug, block_id=block.pk
            )
        pdf = invite_cards_pdf(
            community=access.community, cards=cards, base_url=request.build_absolute_uri("/")
        )
        return _pdf_response(pdf, f"invite-cards-{block.pk}.pdf")
    households = households_visible(access=access, block_id=block.pk)
    return render(
        request,
        "communities/invite_cards.html",
        {"access": access, "current_block": block, "households": households},
    )


@community_view(staff=True, roster=True)
@require_POST
def household_invite_card(request: HttpRequest, access: Access, household_id: int) -> HttpResponse:
    household = household_get_visible(access=access, household_id=household_id)
    if not access.can_issue_invites(household.block_id):
        raise Http404
    issued = services.household_invite_issue(household=household, created_by=request_user(request))
    pdf = invite_cards_pdf(
        community=access.community,
        cards=[(household, issued)],
        base_url=request.build_absolute_uri("/"),
    )
    return _pdf_response(pdf, f"invite-card-{household.pk}.pdf")


@community_view(staff=True, roster=True)
def household_list(request: HttpRequest, access: Access) -> HttpResponse:
    listing = household_list_get(access=access, block_id=int_param(request.GET.get("block", "")))
    return render(
        request,
        "communities/household_list.html",
        {
            "access": access,
            "listing": listing,
            "households": listing.households,
            "selected_block": listing.filter_block,
        },
    )


@community_view(officer=True, roster=True)
@require_http_methods(["GET", "POST"])
def household_create(request: HttpRequest, access: Access) -> HttpResponse:
    form = HouseholdForm(request.POST or None, community=access.community)
    if int_param(request.GET.get("block")) is not None:
        form.initial["block"] = int(request.GET["block"])
    if request.method == "POST" and form.is_valid():
        try:
            household = services.household_create(
                community=access.community, data=services.HouseholdData(**form.cleaned_data)
            )
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            messages.success(request, _("%(label)s was added.") % {"label": household.label})
            return redirect(
                "communities:block_detail", slug=access.community.slug, block_id=household.block_id
            )
    return render(
        request,
        "communities/household_form.html",
        {"access": access, "form": form, "household": None},
    )


@community_view(officer=True, roster=True)
@require_http_methods(["GET", "POST"])
def household_edit(request: HttpRequest, access: Access, household_id: int) -> HttpResponse:
    household = household_get_visible(access=access, household_id=household_id)
    initial = {
        "label": household.label,
        "block": household.block_id,
        "delivery_mode": household.delivery_mode,
        "address": household.address,
        "phone": household.phone,
        "helper_note": household.helper_note,
    }
    form = HouseholdForm(request.POST or None, initial=initial, community=access.community)
    if request.method == "POST" and form.is_valid():
        try:
            services.household_update(
                household=household, data=services.HouseholdData(**form.cleaned_data)
            )
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            messages.success(request, _("The household was saved."))
            return redirect(
                "communities:block_detail", slug=access.community.slug, block_id=household.block_id
            )
    return render(
        request,
        "communities/household_form.html",
        {"access": access, "form": form, "household": household},
    )


@community_view(officer=True, roster=True)
@require_http_methods(["GET", "POST"])
def household_delete(request: HttpRequest, access: Access, household_id: int) -> HttpResponse:
    household = household_get_visible(access=access, household_id=household_id)
    if request.method == "POST":
        block_id = household.block_id
        services.household_remove(household=household)
        messages.success(request, _("The household and its personal data were removed."))
        return redirect("communities:block_detail", slug=access.community.slug, block_id=block_id)
    return render(
        request, "communities/household_delete.html", {"access": access, "household": household}
    )


@community_view(officer=True)
@require_POST
def household_move(request: HttpRequest, access: Access, household_id: int) -> HttpResponse:
    household = household_get_visible(access=access, household_id=household_id)
    services.household_move(
        household=household, direction=-1 if request.POST.get("direction") == "up" else 1
    )
    return redirect(
        "communities:block_detail", slug=access.community.slug, block_id=household.block_id
    )


@community_view(officer=True, roster=True)
@require_http_methods(["GET", "POST"])
def roster_import(request: HttpRequest, access: Access) -> HttpResponse:
    form = RosterUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            if upload.size > roster_csv.MAX_BYTES:
                raise ValidationError(
                    _("The file is larger than 2 MB. Split it into smaller files.")
                )
            pending = roster_csv.roster_import_create(
                community=access.community,
                user=request_user(request),
                file_name=upload.name or "roster.csv",
                data=upload.read(),
            )
        except ValidationError as error:
            form.add_error("file", error.messages)
        else:
            return redirect(
                "communities:roster_import_preview",
                slug=access.community.slug,
                import_id=pending.pk,
            )
    return render(request, "communities/roster_import.html", {"access": access, "form": form})


@community_view(officer=True, roster=True)
@require_http_methods(["GET", "POST"])
def roster_import_preview(request: HttpRequest, access: Access, import_id: int) -> HttpResponse:
    pending = RosterImport.objects.filter(community=access.community, pk=import_id).first()
    if pending is None:
        raise Http404
    if request.method == "POST":
        try:
            count = roster_csv.roster_import_apply(roster_import=pending)
        except roster_csv.AlreadyApplied:
            messages.info(request, _("This file was already imported. Nothing was changed."))
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect(
                "communities:roster_import_preview",
                slug=access.community.slug,
                import_id=pending.pk,
            )
        else:
            messages.success(request, _("%(count)s households were imported.") % {"count": count})
        return redirect("communities:household_list", slug=access.community.slug)
    labels = dict(DeliveryMode.choices)
    rows = [
        {
            **row,
            "mode_label": labels.get(
                row["values"]["delivery_mode"], row["values"]["delivery_mode"]
            ),
        }
        for row in pending.rows
    ]
    return render(
        request,
        "communities/roster_import_preview.html",
        {
            "access": access,
            "pending": pending,
            "rows": rows,
            "add_count": sum(1 for r in rows if r["action"] == "add" and not r["errors"]),
            "update_count": sum(1 for r in rows if r["action"] == "update" and not r["errors"]),
        },
    )


@community_view(officer=True, roster=True)
def roster_export(request: HttpRequest, access: Access) -> HttpResponse:
    data = roster_csv.roster_export_csv(households=households_visible(access=access))
    stamp = timezone.localdate().isoformat()
    response = HttpResponse(data, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="roster-{access.community.slug}-{stamp}.csv"'
    )
    response["Cache-Control"] = "no-store"
    return response
