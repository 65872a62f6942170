from django.urls import path

from notifications.consumers import InboxConsumer, LedgerConsumer

websocket_urlpatterns = [
    path("ws/inbox/", InboxConsumer.as_asgi()),
    path("ws/c/<slug:slug>/circulars/<int:circular_id>/ledger/", LedgerConsumer.as_asgi()),
]
