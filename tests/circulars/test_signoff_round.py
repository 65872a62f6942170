"""A household on a printed sheet that joins by phone before the sheet comes back."""

from __future__ import annotations

import pytest

from circulars import paper
from circulars.models import ReceiptMethod
from communities.models import DeliveryMode
from tests.circulars.test_paper import publish
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory

pytestmark = pytest.mark.django_db


def test_a_household_that_joins_after_printing_can_still_be_signed_off(town: Town) -> None:
    late = HouseholdFactory.create(block=town.block1, label="小川", delivery_mode=DeliveryMode.APP)
    circular = publish(town)
    printed = [r.household_id for r in paper.paper_receipts(circular=circular, block=town.block1)]
    assert late.pk in printed  # no phone yet: it is on the paper round
    paper.print_record_create(
        circular=circular,
        block=town.block1,
        printed_by=town.leader1,
        household_ids=[pk for pk in printed if pk is not None],
        pages=3,
        furigana=False,
        large_print=False,
    )
    MemberFactory.create(household=late)  # a phone joins while the sheet goes round

    assert late.pk not in [
        r.household_id for r in paper.paper_receipts(circular=circular, block=town.block1)
    ]  # the next print leaves it out ...
    assert late.pk in [
        r.household_id for r in paper.signoff_receipts(circular=circular, block=town.block1)
    ]  # ... but the returned sheet still lists it
    result = paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=late.pk, recorded_by=town.leader1
    )
    assert result.recorded
    assert result.receipt.method == ReceiptMethod.PAPER
