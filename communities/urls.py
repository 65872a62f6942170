from django.urls import path

from communities.views import roles, roster

app_name = "communities"

urlpatterns = [
    path("", roster.dashboard, name="dashboard"),
    path("blocks/", roster.block_list, name="block_list"),
    path("blocks/<int:block_id>/", roster.block_detail, name="block_detail"),
    path("blocks/<int:block_id>/rename/", roster.block_rename, name="block_rename"),
    path("blocks/<int:block_id>/delete/", roster.block_delete, name="block_delete"),
    path("blocks/<int:block_id>/move/", roster.block_move, name="block_move"),
    path("blocks/<int:block_id>/invite-cards/", roster.invite_cards, name="invite_cards"),
    path("households/", roster.household_list, name="household_list"),
    path("households/new/", roster.household_create, name="household_create"),
    path("households/<int:household_id>/edit/", roster.household_edit, name="household_edit"),
    path("households/<int:household_id>/delete/", roster.household_delete, name="household_delete"),
    path("households/<int:household_id>/move/", roster.household_move, name="household_move"),
    path(
        "households/<int:household_id>/invite-card/",
        roster.household_invite_card,
        name="household_invite_card",
    ),
    path("roster/import/", roster.roster_import, name="roster_import"),
    path(
        "roster/import/<int:import_id>/",
        roster.roster_import_preview,
        name="roster_import_preview",
    ),
    path("roster/export.csv", roster.roster_export, name="roster_export"),
    path("roles/", roles.role_list, name="role_list"),
    path("roles/<int:role_id>/end/", roles.role_end, name="role_end"),
    path("rollover/", roles.rollover, name="rollover"),
    path("settings/", roles.community_settings, name="settings"),
]
