"""Roles page and the year rollover (年度切替)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from communities import services
from communities.decorators import community_view
from communities.forms import CommunitySettingsForm, RoleForm, form_errors_add
from communities.models import BLOCK_ROLES, RoleAssignment, RoleKind
from communities.params import int_param
from communities.selectors import Access, blocks_visible, roles_current, roles_history


def _email_list(raw: str) -> tuple[str, ...]:
    parts = raw.replace("、", ",").replace("\n", ",").replace(" ", ",").split(",")
    return tuple(part.strip() for part in parts if part.strip())


@community_view(officer=True)
@require_http_methods(["GET", "POST"])
def role_list(request: HttpRequest, access: Access) -> HttpResponse:
    form = RoleForm(request.POST or None, community=access.community)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data["role"] == "chair" and not access.is_chair:
            form.add_error("role", _("Only the chair can name another chair."))
        else:
            try:
                user = services.user_get_or_create_by_email(email=data["email"], name=data["name"])
                services.role_assign(
                    community=access.community, user=user, role=data["role"], block=data["block"]
                )
            except ValidationError as error:
                for message in error.messages:
                    form.add_error(None, message)
            else:
                messages.success(
                    request,
                    _("The role was given. They can log in with a code sent to their email."),
                )
                return redirect("communities:role_list", slug=access.community.slug)
    return render(
        request,
        "communities/role_list.html",
        {
            "access": access,
            "form": form,
            "roles": roles_current(access=access),
            "history": roles_history(access=access)[:200],
        },
    )


@community_view(officer=True)
@require_POST
def role_end(request: HttpRequest, access: Access, role_id: int) -> HttpResponse:
    assignment = RoleAssignment.objects.filter(
        community=access.community, pk=role_id, ended_at__isnull=True
    ).first()
    if assignment is None:
        raise Http404
    if assignment.role == RoleKind.CHAIR and not access.is_chair:
        messages.error(request, _("Only the chair can end a chair's role."))
        return redirect("communities:role_list", slug=access.community.slug)
    try:
        services.role_end(assignment=assignment)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("The role was ended. It stays in the history."))
    return redirect("communities:role_list", slug=access.community.slug)


@community_view(officer=True)
@require_http_methods(["GET", "POST"])
def rollover(request: HttpRequest, access: Access) -> HttpResponse:
    """One page to name next year's block leaders and helpers for every block."""
    blocks = list(blocks_visible(access=access))
    current = roles_current(access=access).filter(role__in=BLOCK_ROLES)
    by_block: dict[int, dict[str, list[str]]] = {}
    for role in current:
        if role.block_id is None:
            continue
        entry = by_block.setdefault(role.block_id, {"block_leader": [], "helper": []})
        entry[role.role].append(role.user.email)
    next_year = services.fiscal_year_current() + 1
    errors: list[str] = []
    if request.method == "POST":
        year_raw = request.POST.get("fiscal_year", "")
        year = int_param(year_raw) or 0
        if not 2000 <= year <= 2100:
            errors.append(_("Enter the new year, for example %(year)s.") % {"year": next_year})
        assignments = [
            services.BlockAssignment(
                block=block,
                leader_emails=_email_list(request.POST.get(f"leader-{block.pk}", "")),
                helper_emails=_email_list(request.POST.get(f"helper-{block.pk}", "")),
            )
            for block in blocks
        ]
        if not errors:
            try:
                services.year_rollover(
                    community=access.community, fiscal_year=year, assignments=assignments
                )
            except ValidationError as error:
                errors.extend(error.messages)
            else:
                messages.success(
                    request,
                    _("Year %(year)s has started. Last year's roles are kept in the history.")
                    % {"year": year},
                )
                return redirect("communities:role_list", slug=access.community.slug)
    rows = [
        {
            "block": block,
            "leaders": request.POST.get(f"leader-{block.pk}")
            if request.method == "POST"
            else ", ".join(by_block.get(block.pk, {}).get("block_leader", [])),
            "helpers": request.POST.get(f"helper-{block.pk}")
            if request.method == "POST"
            else ", ".join(by_block.get(block.pk, {}).get("helper", [])),
        }
        for block in blocks
    ]
    return render(
        request,
        "communities/rollover.html",
        {"access": access, "rows": rows, "next_year": next_year, "errors": errors},
    )


@community_view(officer=True)
@require_http_methods(["GET", "POST"])
def community_settings(request: HttpRequest, access: Access) -> HttpResponse:
    community = access.community
    form = CommunitySettingsForm(
        request.POST or None,
        initial={
            "name": community.name,
            "contact": community.contact,
            "paper_distribution": community.paper_distribution,
            "allow_block_leader_posts": community.allow_block_leader_posts,
            "roster_purpose": community.roster_purpose,
            "quiet_start": community.quiet_start,
            "quiet_end": community.quiet_end,
            "reminder_days": community.reminder_days,
            "ladder_important": community.ladder_important,
            "ladder_urgent": community.ladder_urgent,
            "digest_hour": community.digest_hour,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.community_update(community=community, **form.cleaned_data)
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            messages.success(request, _("The settings were saved."))
            return redirect("communities:settings", slug=community.slug)
    return render(request, "communities/settings.html", {"access": access, "form": form})
