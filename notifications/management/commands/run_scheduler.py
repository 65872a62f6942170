import time

from django.core.management.base import BaseCommand, CommandParser

from notifications.scheduler import scheduler_tick


class Command(BaseCommand):
    help = (
        "Enqueue what is due (scheduled circulars, reminders, escalation steps); once or in a loop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=int, default=0, help="repeat every N seconds")

    def handle(self, *args: object, **options: object) -> None:
        interval = int(str(options["loop"]))
        while True:
            tick = scheduler_tick()
            if tick.published or tick.enqueued or tick.recovered:
                self.stdout.write(
                    f"published {tick.published}, reminders {tick.reminders}, "
                    f"recovered {tick.recovered}, enqueued {tick.enqueued}"
                )
            if not interval:
                return
            time.sleep(interval)
