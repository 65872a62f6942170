from django.urls import include, path

from communities.views import health, home, join, me
from notifications import push_views

urlpatterns = [
    path("", home.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("help/", home.help_page, name="help"),
    path("prefs/", home.preferences, name="preferences"),
    path("join/", join.join_code, name="join_code"),
    path("join/<str:token>/", join.join_token, name="join_token"),
    path("login/link/<str:token>/", join.login_link, name="login_link"),
    path("me/", me.me, name="me"),
    path("me/export.json", me.me_export, name="me_export"),
    path("me/add-device/", me.add_device, name="add_device"),
    path("me/contact/", me.me_contact, name="me_contact"),
    path("c/new/", home.community_new, name="community_new"),
    path("c/<slug:slug>/", include("communities.urls")),
    path("c/<slug:slug>/", include("circulars.urls")),
    path("e/", include("notifications.email_urls")),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("push/", include("notifications.push_urls")),
    path("sw.js", push_views.service_worker, name="service_worker"),
]

handler500 = "config.database_outage.server_error"
# allauth answers its own rate limits (login floods) with this view: the same Japanese page.
handler429 = "communities.ratelimit.too_many"
