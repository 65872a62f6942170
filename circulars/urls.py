from django.urls import path

from circulars import paper_views, question_views, safety_record_views, safety_views, views

app_name = "circulars"

urlpatterns = [
    path("circulars/", views.circular_list, name="list"),
    path("circulars/new/", views.circular_new, name="new"),
    path("circulars/<int:circular_id>/", views.circular_detail, name="detail"),
    path("circulars/<int:circular_id>/edit/", views.circular_edit, name="edit"),
    path("circulars/<int:circular_id>/draft/", views.circular_draft, name="draft"),
    path("circulars/<int:circular_id>/preview/", views.circular_preview, name="preview"),
    path("circulars/<int:circular_id>/unschedule/", views.circular_unschedule, name="unschedule"),
    path("circulars/<int:circular_id>/furigana/", views.circular_furigana, name="furigana"),
    path("circulars/<int:circular_id>/delete/", views.circular_delete, name="delete"),
    path("circulars/<int:circular_id>/copy/", views.circular_copy, name="copy"),
    path("circulars/<int:circular_id>/confirm/", views.circular_confirm, name="confirm"),
    path("circulars/<int:circular_id>/ledger/", views.ledger, name="ledger"),
    path(
        "circulars/<int:circular_id>/ledger/<int:household_id>/proxy/",
        views.ledger_proxy,
        name="ledger_proxy",
    ),
    path("circulars/<int:circular_id>/attachments/", views.attachment_add, name="attachment_add"),
    path(
        "circulars/<int:circular_id>/attachments/<int:attachment_id>/delete/",
        views.attachment_delete,
        name="attachment_delete",
    ),
    path("files/<int:attachment_id>/<str:variant>/", views.attachment_file, name="attachment_file"),
    path("circulars/<int:circular_id>/paper/", paper_views.print_page, name="paper_print"),
    path(
        "circulars/<int:circular_id>/paper/<int:block_id>/",
        paper_views.signoff,
        name="paper_signoff",
    ),
    path("circulars/<int:circular_id>/answers/", question_views.answers_submit, name="answers"),
    path(
        "circulars/<int:circular_id>/questions/",
        question_views.questions_edit,
        name="questions",
    ),
    path(
        "circulars/<int:circular_id>/answers/summary/",
        question_views.answers_summary,
        name="answers_summary",
    ),
    path(
        "circulars/<int:circular_id>/answers/<int:household_id>/",
        question_views.answers_proxy,
        name="answers_proxy",
    ),
    path(
        "circulars/<int:circular_id>/paper/<int:block_id>/<int:household_id>/answers/",
        question_views.paper_answers,
        name="paper_answers",
    ),
    path(
        "circulars/<int:circular_id>/answers.csv",
        question_views.answers_csv,
        name="answers_csv",
    ),
    path("safety/start/", safety_views.safety_start, name="safety_start"),
    path("circulars/<int:circular_id>/safety/", safety_views.safety_board, name="safety_board"),
    path(
        "circulars/<int:circular_id>/safety/answer/",
        safety_views.safety_answer,
        name="safety_answer",
    ),
    path(
        "circulars/<int:circular_id>/safety/<int:block_id>/",
        safety_record_views.record,
        name="safety_record",
    ),
    path("inbox/", views.inbox, name="inbox"),
    path("followup/", views.followup, name="followup"),
]
