from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from communities.backup import BackupError, backup_create, backup_restore


class Command(BaseCommand):
    help = "Back up the database and uploaded files into a directory, or restore from one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory")
        parser.add_argument("--restore", action="store_true", help="restore instead of back up")

    def handle(self, *args: object, **options: object) -> None:
        directory = Path(str(options["directory"]))
        try:
            if options["restore"]:
                backup_restore(directory=directory)
                self.stdout.write(f"restored from {directory}")
            else:
                backup_create(directory=directory)
                self.stdout.write(f"backup written to {directory}")
        except (BackupError, OSError, KeyError) as error:
            raise CommandError(str(error)) from error
