from django.apps import AppConfig


class CircularsConfig(AppConfig):
    name = "circulars"
