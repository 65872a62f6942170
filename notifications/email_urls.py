from django.urls import path

from notifications import email_views

app_name = "email_link"

urlpatterns = [
    path("<str:token>/", email_views.email_circular, name="circular"),
]
