from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.urls import reverse

from communities import services
from communities.demo import demo_user

ROLES = ["chair", "officer", "block_leader", "helper", "resident", "supporter"]


class Command(BaseCommand):
    help = "Print a fresh one-time login URL for a demo person (refused in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", choices=ROLES)
        parser.add_argument("--base-url", default=settings.KAIRAN_PUBLIC_URL)

    def handle(self, *args: object, **options: object) -> None:
        user = demo_user(str(options["role"]))
        token = services.login_link_issue(user=user, minutes=60 * 24)
        base = str(options["base_url"]).rstrip("/")
        self.stdout.write(base + reverse("login_link", kwargs={"token": token}))
