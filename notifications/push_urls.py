from django.urls import path

from notifications import push_views

app_name = "push"

urlpatterns = [
    path("", push_views.settings_page, name="settings"),
    path("subscribe/", push_views.subscribe, name="subscribe"),
    path("unsubscribe/", push_views.unsubscribe, name="unsubscribe"),
    path("manifest.webmanifest", push_views.manifest, name="manifest"),
]
