"""Channel-layer group names, built only from server-side ids.

Groups follow visibility: a ledger row goes to its (circular, block) group only, so a
block leader subscribed to block 3 never receives block 4's rows.
"""


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def household_group(household_id: int) -> str:
    return f"household.{household_id}"


def ledger_block_group(circular_id: int, block_id: int) -> str:
    return f"ledger.{circular_id}.block.{block_id}"


def ledger_totals_group(circular_id: int) -> str:
    return f"ledger.{circular_id}.totals"
