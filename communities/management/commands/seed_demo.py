from django.core.management.base import BaseCommand

from communities.demo import DEMO_TOTP_SECRET, seed_demo


class Command(BaseCommand):
    help = "Create the demo association さくら町内会 (idempotent; refused in production)."

    def handle(self, *args: object, **options: object) -> None:
        community = seed_demo()
        households = community.households.count()
        self.stdout.write(f"Demo ready: {community.name} with {households} households.")
        self.stdout.write(f"Demo authenticator secret (chair, officer): {DEMO_TOTP_SECRET}")
