"""The share page's changes to an access list, before the registry or the rag service checks them."""

from __future__ import annotations

from modelhub_console.sharing import Access, Grant, check_grant


def test_one_grant_per_user_or_group_sorted_and_removable() -> None:
    access = Access.from_json(False, [{"principal_type": "user", "principal_id": "zoe", "permission": "read"}])
    access = access.with_grant(Grant("group", "ml", "read")).with_grant(Grant("user", "zoe", "write"))
    assert access.grants_json() == [
        {"principal_type": "group", "principal_id": "ml", "permission": "read"},
        {"principal_type": "user", "principal_id": "zoe", "permission": "write"},
    ]
    assert access.without("user", "zoe").grants == (Grant("group", "ml", "read"),)
    assert access.without("group", "nobody") == access
    assert access.with_public_read(True).public_read and access.with_public_read(True).grants == access.grants


def test_a_user_and_a_group_of_the_same_id_are_two_grants() -> None:
    access = Access().with_grant(Grant("user", "ml", "read")).with_grant(Grant("group", "ml", "write"))
    assert len(access.grants) == 2


def test_what_is_wrong_with_a_typed_grant() -> None:
    assert check_grant("user", "bob", "read") is None
    assert check_grant("team", "bob", "read") == "choose a user or a group"
    assert check_grant("group", "  ", "read") == "type the group's id"
    assert check_grant("user", "bob", "admin") == "choose read or write"


def test_grants_of_an_odd_shape_are_skipped() -> None:
    access = Access.from_json(
        None, ["not a grant", {"principal_type": "user", "principal_id": "a", "permission": "read"}]
    )
    assert access.public_read is False and [g.principal_id for g in access.grants] == ["a"]
