"""Rules in plain words: what a token may do, as the preview, the queue, the request and the token say it."""

from __future__ import annotations

from accessreq import scopes


def test_it_describes_one_repository() -> None:
    rules = [{"repository": "myapp/api", "actions": ["content/read", "content/write"]}]
    assert scopes.describe(rules) == ["Pull and push in myapp/api."]


def test_it_shares_a_sentence_between_rules_with_the_same_actions() -> None:
    rules = [
        {"repository": "myapp/web", "actions": ["content/read"]},
        {"repository": "myapp/api", "actions": ["content/read"]},
    ]
    assert scopes.describe(rules) == ["Pull in myapp/api and myapp/web."]


def test_it_says_a_wildcard_covers_repositories_created_later() -> None:
    rules = [
        {"repository": "shared/*", "actions": ["content/read"]},
        {"repository": "myapp/api", "actions": ["content/read", "content/write", "metadata/read"]},
    ]
    assert scopes.describe(rules) == [
        "Pull, push and list tags in myapp/api.",
        "Pull in every repository under shared/, including ones created later.",
    ]


def test_it_describes_everything() -> None:
    rules = [{"repository": "*", "actions": list(scopes.ACTIONS)}]
    assert scopes.describe(rules) == [
        "Pull, push, delete images, list tags and change tag settings in every repository in the registry, "
        "including ones created later."
    ]


def test_it_describes_nothing_as_nothing() -> None:
    assert scopes.describe([]) == []
    assert scopes.describe([{"repository": "myapp/api", "actions": []}]) == []


def test_it_explains_each_risk() -> None:
    found = scopes.risks([{"repository": "myapp/*", "actions": ["content/read", "content/delete"]}], "partner")
    explained = dict(scopes.explain_risks(found))
    assert list(explained) == ["delete", "wildcard", "partner"]
    assert "delete images for good" in explained["delete"]
    assert "created later" in explained["wildcard"]
    assert all(explained.values())
