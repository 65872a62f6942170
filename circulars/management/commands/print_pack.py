from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from circulars.models import Circular, CircularStatus
from circulars.paper import print_record_create
from circulars.print_pack import print_pack_pdf
from communities.models import Block


class Command(BaseCommand):
    help = "Write the print pack of a circular (one block, or every block) to a PDF file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("circular_id", type=int)
        parser.add_argument("--block", type=int, help="block id (default: every block)")
        parser.add_argument("--furigana", action="store_true")
        parser.add_argument("--large", action="store_true")
        parser.add_argument("-o", "--output", required=True)
        parser.add_argument("--base-url", default=settings.KAIRAN_PUBLIC_URL)

    def handle(self, *args: object, **options: object) -> None:
        circular = Circular.objects.filter(
            pk=int(str(options["circular_id"])), status=CircularStatus.PUBLISHED
        ).first()
        if circular is None:
            raise CommandError("No published circular with that id.")
        blocks = Block.objects.filter(pk__in=circular.receipts.values("block_id")).order_by(
            "position", "pk"
        )
        if options["block"] is not None:
            blocks = blocks.filter(pk=int(str(options["block"])))
            if not blocks:
                raise CommandError("That block did not receive this circular.")
        result = print_pack_pdf(
            circular=circular,
            blocks=list(blocks),
            base_url=str(options["base_url"]),
            printed_by=None,
            furigana=bool(options["furigana"]),
            large=bool(options["large"]),
        )
        Path(str(options["output"])).write_bytes(result.pdf)
        print_record_create(
            circular=circular,
            block=blocks[0] if options["block"] is not None else None,
            printed_by=None,
            household_ids=result.household_ids,
            pages=result.pages,
            furigana=bool(options["furigana"]),
            large_print=bool(options["large"]),
        )
        self.stdout.write(
            f"{options['output']}: {result.pages} pages, {len(result.household_ids)} households"
        )
