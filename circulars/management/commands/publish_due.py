import time

from django.core.management.base import BaseCommand, CommandParser

from circulars.services import circulars_publish_due


class Command(BaseCommand):
    help = "Publish scheduled circulars whose time has come (once, or every N seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=int, default=0, help="repeat every N seconds")

    def handle(self, *args: object, **options: object) -> None:
        interval = int(str(options["loop"]))
        while True:
            count = circulars_publish_due()
            if count:
                self.stdout.write(f"published {count} scheduled circular(s)")
            if not interval:
                return
            time.sleep(interval)
