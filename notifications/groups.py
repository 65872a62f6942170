"""Channel-layer group names, built only from server-side ids."""


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def household_group(household_id: int) -> str:
    return f"household.{household_id}"
