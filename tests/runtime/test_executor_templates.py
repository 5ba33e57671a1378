"""Template rules, Retry-After parsing and Link headers: the pure parts of the executor."""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest

from generator.runtime.executor import (
    _link_next,
    _same_base,
    _sanitise,
    parse_rate_limit_reset,
    parse_retry_after,
)
from generator.runtime.templating import (
    MISSING,
    MissingPlaceholder,
    TextTemplate,
    UnknownFilter,
    compile_value,
    get_path,
    pairs,
)


def render(template: object, **ns: object) -> object:
    return compile_value(template).render(ns)


def test_an_exact_placeholder_keeps_the_json_type_and_is_dropped_when_absent() -> None:
    template = {"n": "{n}", "flag": "{flag}", "tags": "{tags}", "obj": "{obj}", "gone": "{gone}"}
    assert render(template, n=3, flag=False, tags=["a", "b"], obj={"k": None}) == {
        "n": 3,
        "flag": False,
        "tags": ["a", "b"],
        "obj": {"k": None},
    }
    # An explicit null is a value (the schema allowed it); absence drops the key.
    assert render({"x": "{x}"}, x=None) == {"x": None}
    assert render({"x": "{x}"}) == {}


def test_interpolated_strings_drop_when_a_placeholder_is_absent() -> None:
    assert render({"q": "repo:{owner}/{repo} is:open"}, owner="a", repo="b") == {
        "q": "repo:a/b is:open"
    }
    assert render({"q": "repo:{owner}/{repo}"}, owner="a") == {}
    assert render({"q": "n={n} on={on}"}, n=2, on=True) == {"q": "n=2 on=true"}


def test_nested_objects_and_lists_recurse_and_constants_stay() -> None:
    template = {
        "properties": {"email": "{email}", "firstname": "{first}"},
        "list": ["{a}", "const", "{b}", 7],
        "fixed": {"x": [1, {"y": True}]},
        "json_text": '{"not": "a placeholder"}',
    }
    assert render(template, email="e@x", a=1) == {
        "properties": {"email": "e@x"},
        "list": [1, "const", 7],
        "fixed": {"x": [1, {"y": True}]},
        "json_text": '{"not": "a placeholder"}',
    }


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        # JQL, Shopify search: double quotes, backslash escapes
        ("text ~ {v|double_quoted}", 'say "hi" \\ OR x', 'text ~ "say \\"hi\\" \\\\ OR x"'),
        # SOQL, Airtable formulas: single quotes, backslash escapes
        ("Name = {v|single_quoted}", "O'Brien \\", "Name = 'O\\'Brien \\\\'"),
        # SQL, OData $filter (Microsoft Graph): the quote doubled, backslash as is
        ("name eq {v|sql_quoted}", "O'Brien \\", "name eq 'O''Brien \\'"),
        # a list: each item a literal, joined (JQL `in`, SOQL `IN`)
        ("labels in ({v|double_quoted})", ["a", 'b"', 3], 'labels in ("a", "b\\"", "3")'),
        ("Id IN ({v|sql_quoted})", ["x'1"], "Id IN ('x''1')"),
        # non-strings are written as text first
        ("n = {v|single_quoted}", True, "n = 'true'"),
        # json: the JSON text of any value
        ("filter={v|json}", {"a": ["é", None]}, 'filter={"a":["é",null]}'),
        ("{v|json}", "x", '"x"'),
        ("{v|json}", 3, "3"),
    ],
)
def test_filters_write_the_value_as_a_literal_of_the_query_language(
    template: str, value: object, expected: str
) -> None:
    assert render({"q": template}, v=value) == {"q": expected}


def test_a_filtered_placeholder_is_dropped_like_any_other_and_in_a_path_is_encoded() -> None:
    assert render({"q": "{v|double_quoted}", "r": "x {v|json}"}) == {}
    assert render({"q": "{v|double_quoted}"}, v=None) == {}
    path = TextTemplate("/Users({id|sql_quoted})", encode=True)
    assert path.names() == ("id",)
    assert path.render({"id": "O'B/1"}) == "/Users(%27O%27%27B%2F1%27)"
    with pytest.raises(UnknownFilter):
        compile_value({"q": "{v|shell}"})


def test_placeholder_names_are_collected() -> None:
    template = {"a": "{x}", "b": ["{y} and {z|json}"], "c": 1}
    assert compile_value(template).names() == {"x", "y", "z"}


def test_path_placeholders_are_required_and_percent_encoded() -> None:
    path = TextTemplate("/repos/{owner}/{repo}/issues/{n}", encode=True)
    assert path.render({"owner": "a/b", "repo": "ü ?#%", "n": 12}) == (
        "/repos/a%2Fb/%C3%BC%20%3F%23%25/issues/12"
    )
    with pytest.raises(MissingPlaceholder) as info:
        path.render({"owner": "a", "n": 1})
    assert info.value.name == "repo"


def test_query_pairs_repeat_lists_and_drop_null() -> None:
    assert pairs({"a": 1, "b": True, "c": None, "d": ["x", None, "y"], "f": "s"}) == [
        ("a", "1"),
        ("b", "true"),
        ("d", "x"),
        ("d", "y"),
        ("f", "s"),
    ]


def test_query_and_form_pairs_spell_nested_objects_with_brackets() -> None:
    """Stripe's `metadata[order]=1001`, not the JSON text of the object."""
    rendered = {
        "metadata": {"order": "1001", "note": None, "deep": {"x": 1}},
        "items": [{"price": "p_1", "quantity": 2}, {"price": "p_2"}],
        "expand[]": ["customer", "charge"],
    }
    assert pairs(rendered) == [
        ("metadata[order]", "1001"),
        ("metadata[deep][x]", "1"),
        ("items[0][price]", "p_1"),
        ("items[0][quantity]", "2"),
        ("items[1][price]", "p_2"),
        ("expand[]", "customer"),
        ("expand[]", "charge"),
    ]


def test_a_list_inside_an_object_or_list_is_written_with_brackets() -> None:
    """Repeated, `items[0][tax_rates]` is its last item to Rack, PHP and Stripe; a top-level
    list keeps repeating its key (`ids=1&ids=2`, what servers that read no brackets expect)."""
    rendered = {
        "ids": [1, 2],
        "items": [{"price": "p_1", "tax_rates": ["t_1", None, "t_2"]}],
        "filter": {"status": ["open", "closed"], "none": []},
        "grid": [["a", "b"], ["c"]],
        "mixed": [{"a": 1}, "x"],
    }
    assert pairs(rendered) == [
        ("ids", "1"),
        ("ids", "2"),
        ("items[0][price]", "p_1"),
        ("items[0][tax_rates][]", "t_1"),
        ("items[0][tax_rates][]", "t_2"),
        ("filter[status][]", "open"),
        ("filter[status][]", "closed"),
        ("grid[0][]", "a"),
        ("grid[0][]", "b"),
        ("grid[1][]", "c"),
        # With an object among them, every item is indexed, so that no index is reused.
        ("mixed[0][a]", "1"),
        ("mixed[1]", "x"),
    ]


def test_a_nested_object_whose_placeholders_are_all_absent_is_dropped() -> None:
    template = {
        "query": "{query}",
        "filter": {"property": "object", "value": "{kind}"},
        "sort": [{"timestamp": "last_edited_time", "direction": "{direction}"}],
        "fixed": {"always": True},
        "page_size": 25,
    }
    assert render(template, query="q") == {"query": "q", "fixed": {"always": True}, "page_size": 25}
    assert render(template, kind="page", direction="asc") == {
        "filter": {"property": "object", "value": "page"},
        "sort": [{"timestamp": "last_edited_time", "direction": "asc"}],
        "fixed": {"always": True},
        "page_size": 25,
    }
    # The root is never dropped: a POST whose arguments are all optional still sends `{}`.
    assert render({"query": "{query}", "filter": {"value": "{kind}"}}) == {}
    # One placeholder with a value keeps the object (the others drop as keys).
    assert render({"o": {"a": "{a}", "b": "{b}", "c": 1}}, a=1) == {"o": {"a": 1, "c": 1}}


def test_dotted_paths() -> None:
    body = {"paging": {"next": {"after": "20"}}, "items": [{"id": 1}, {"id": 2}], "x": None}
    assert get_path(body, "paging.next.after") == "20"
    assert get_path(body, "items.1.id") == 2
    assert get_path(body, "") is body
    assert get_path(body, "x") is None
    assert get_path(body, "paging.prev") is MISSING
    assert get_path(body, "items.5") is MISSING
    assert get_path(body, "x.y") is MISSING
    assert get_path(body, "items.-1.id") == 2  # Stripe: the last record's id is the cursor
    assert get_path(body, "items.-2.id") == 1
    assert get_path(body, "items.-3") is MISSING
    assert get_path({"items": []}, "items.-1") is MISSING
    # A key that holds dots (OData's annotations) is found as it is, the longest run first.
    odata = {"@odata.nextLink": "https://x/next", "@odata.count": 3, "a": {"b.c.d": {"e": 1}}}
    assert get_path(odata, "@odata.nextLink") == "https://x/next"
    assert get_path(odata, "a.b.c.d.e") == 1
    assert get_path({"a.b": 1, "a": {"b": 2}}, "a.b") == 2  # the plain segments win
    assert get_path(odata, "@odata.next") is MISSING
    assert get_path(body, "items.²") is MISSING


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk) is None


def test_rate_limit_reset_in_epoch_seconds_epoch_milliseconds_or_seconds_to_wait() -> None:
    now = 1_763_700_000.0  # November 2025
    assert parse_rate_limit_reset("1763700030", now=now) == 30.0  # GitHub: epoch seconds
    assert parse_rate_limit_reset("1763700002500", now=now) == 2.5  # Linear: epoch milliseconds
    assert parse_rate_limit_reset(" 45 ", now=now) == 45.0  # IETF RateLimit-Reset: a delay
    assert parse_rate_limit_reset("0.5", now=now) == 0.5
    assert parse_rate_limit_reset("1763699000", now=now) == 0.0  # past: no wait
    for junk in (None, "", "soon", "nan", "inf", "-3", "١٢"):
        assert parse_rate_limit_reset(junk, now=now) is None


def test_link_header_parsing() -> None:
    both = httpx2.Headers(
        {
            "link": '<https://x.test/a?page_info=p>; rel="previous", '
            '<https://x.test/a?page_info=n>; rel="next"'
        }
    )
    assert _link_next(both) == (True, "https://x.test/a?page_info=n")
    assert _link_next(httpx2.Headers({"link": '<https://x.test/last>; rel="last"'})) == (True, None)
    assert _link_next(httpx2.Headers({})) == (False, None)
    # RFC 8288: commas and semicolons inside <...> or a quoted value separate nothing; the rel
    # value is a space-separated list, compared without regard to case; a link-value's first
    # rel counts; two Link fields are one list.
    commas = httpx2.Headers(
        {
            "link": '<https://x.test/i?fields=a,b;c&page=2>; title="a, b; rel=next"; '
            'rel="prev NEXT", <https://x.test/i?fields=a,b&page=9>; rel="last"'
        }
    )
    assert _link_next(commas) == (True, "https://x.test/i?fields=a,b;c&page=2")
    first_rel = httpx2.Headers({"link": "<https://x.test/2>; rel=last; rel=next"})
    assert _link_next(first_rel) == (True, None)
    two = httpx2.Headers([("link", '</a?p=1>; rel="prev"'), ("link", "</a?p=3>;rel=next")])
    assert _link_next(two) == (True, "/a?p=3")
    for junk in ('<https://x.test/2; rel="next"', 'https://x.test/2; rel="next"', "<>; rel=next"):
        assert _link_next(httpx2.Headers({"link": junk})) == (True, None)
    unclosed = httpx2.Headers({"link": '<https://x.test/2>; title="a, <b>; rel=next'})
    assert _link_next(unclosed) == (True, None)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://acme.myshopify.com/admin/api/2024-10/orders.json?page_info=x", True),
        ("https://acme.myshopify.com/admin/api/2024-10", True),
        ("https://globex.myshopify.com/admin/api/2024-10/orders.json", False),
        ("http://acme.myshopify.com/admin/api/2024-10/orders.json", False),
        ("https://acme.myshopify.com:444/admin/api/2024-10/orders.json", False),
        ("https://acme.myshopify.com/admin/api/2024-100/orders.json", False),
        ("https://acme.myshopify.com/admin/other", False),
        ("https://user:pw@acme.myshopify.com/admin/api/2024-10/x", False),
        ("/admin/api/2024-10/orders.json", False),
    ],
)
def test_link_cursors_must_stay_under_the_base_url(url: str, ok: bool) -> None:
    assert _same_base(url, "https://acme.myshopify.com/admin/api/2024-10") is ok


def test_upstream_error_text_is_scrubbed_and_shortened() -> None:
    secret = "xoxb-very-secret"
    text = f"token {secret}\r\ninvalid\x00 " + "x" * 500
    clean = _sanitise(text, (secret,))
    assert secret not in clean and "\n" not in clean and "\x00" not in clean
    assert clean.startswith("token [redacted] invalid ")
    assert len(clean) == 200
