"""The REST source against a real HTTP server on 127.0.0.1 that behaves like a legacy API:
every pagination style, a modified-since filter, 429 bursts with Retry-After, flaky 5xx, a page
that never comes, an expired session token, a malformed record, secrets in URLs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_assets.catalog.loader import load_catalog
from sync_assets.errors import CatalogError
from sync_assets_tests.helpers import failure_message, make_harness, materialization, sync_log_rows
from sync_assets_tests.legacy_api import (
    START,
    LegacyApi,
    held_back,
    product,
    start_api,
    stop_api,
    too_many,
    unavailable,
)

PRODUCTS = {
    "name": "products",
    "source": "legacy",
    "endpoint": "/api/products",
    "records": "data",
    "paginate": {"style": "offset", "page_size": 20},
    "incremental": {"param": "modified_since"},
    "primary_key": ["id"],
    "updated_at": "modified_date",
    "schema": {"price": "decimal(12,2)"},
    "columns": {"name": "product_name", "dims.width": "width"},
}
FAST_RETRIES = {"max_attempts": 4, "backoff": "0.01s", "max_backoff": "2s"}


@pytest.fixture
def api():
    started = start_api([product(i) for i in range(1, 46)])
    yield started
    stop_api(started)


def harness_for(tmp_path, monkeypatch, make_database, api: LegacyApi, *, table=None, connection=None):
    cache_url = make_database("sqlite")
    monkeypatch.setenv("LEGACY_API_URL", api.url)
    legacy = {
        "type": "rest",
        "base_url": "${LEGACY_API_URL}",
        "http_retries": FAST_RETRIES,
        **(connection or {}),
    }
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=cache_url,
        cache_url=cache_url,
        tables=[{**PRODUCTS, **(table or {})}],
        extra={"connections": {"legacy": legacy, "cache": {"url": "${SYNC_TEST_CACHE_URL}"}}},
    )
    return harness, cache_url


def cached(cache_url: sa.URL, table: str = "products") -> list[dict[str, Any]]:
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]
    engine.dispose()
    return rows


def sync(harness, partition: str = "mass"):
    return harness.sync("products", partition, source="legacy")


@pytest.mark.parametrize("style", ["offset", "page", "cursor", "link", "link_header", "none"])
def test_every_pagination_style_loads_every_record(tmp_path, monkeypatch, make_database, api, style):
    api.style = style
    paginate: dict[str, Any] = {"style": style, "page_size": 20}
    if style == "link":
        paginate["next_path"] = "links.next"
    if style == "link_header":
        paginate["style"] = "link"
    table = {"paginate": paginate, "records": None if style == "none" else "data"}
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api, table=table)
    result = sync(harness)
    assert result.success, failure_message(result)
    rows = cached(cache_url)
    assert [r["id"] for r in rows] == list(range(1, 46))
    assert materialization(result)["sync_assets/rows_read"] == 45
    first = rows[0]
    assert first["product_name"] == "product 1" and first["width"] == 1
    assert Decimal(str(first["price"])) == Decimal("1.25")
    assert json.loads(first["dims"]) == {"width": 1, "height": 2}  # nested objects as JSON text
    assert json.loads(first["tags"]) == ["t1"]
    assert first["active"] in (0, False)
    pages = {"offset": 3, "page": 3, "cursor": 5, "link": 5, "link_header": 5, "none": 1}[style]
    assert len(api.data_requests()) == pages


@pytest.mark.parametrize("style", ["offset", "link"])
def test_an_endpoints_own_query_stays_on_every_page(tmp_path, monkeypatch, make_database, api, style):
    api.style = style
    paginate = {"style": style, "page_size": 5, **({"next_path": "links.next"} if style == "link" else {})}
    table = {"endpoint": "/api/products?active=true", "paginate": paginate}
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api, table=table)
    result = sync(harness)
    assert result.success, failure_message(result)
    assert [r["id"] for r in cached(cache_url)] == list(range(2, 46, 2))
    assert all(r.args["active"] == "true" for r in api.data_requests())


def test_a_daily_sends_the_watermark_less_the_lookback_and_upserts_what_changed(
    tmp_path, monkeypatch, make_database, api
):
    harness, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, api, table={"lookback": {"daily": "10m"}}
    )
    assert sync(harness).success
    newest = START.replace(minute=45)  # product 45's stamp, the watermark of the mass
    api.records[2] = product(3, modified=newest.replace(minute=50), name="renamed")
    api.records.append(product(46, modified=newest.replace(minute=51)))
    api.requests.clear()
    daily = sync(harness, "daily")
    assert daily.success, failure_message(daily)
    (request, *_) = api.data_requests()
    assert request.args["modified_since"] == "2026-03-01T08:35:00"  # 08:45 less the 10 min lookback
    meta = {k.removeprefix("sync_assets/"): v for k, v in materialization(daily).items()}
    # 08:35 on: products 35..45 re-read unchanged, 3 changed, 46 new
    assert (meta["rows_read"], meta["rows_inserted"], meta["rows_updated"]) == (13, 1, 1)
    assert meta["rows_unchanged"] == 11
    rows = {r["id"]: r for r in cached(cache_url)}
    assert rows[3]["product_name"] == "renamed" and 46 in rows and len(rows) == 46
    log = sync_log_rows(cache_url, "products")[-1]
    assert log["status"] == "succeeded" and log["watermark_to"].startswith("2026-03-01 08:51")


def test_a_daily_with_no_change_writes_nothing_and_keeps_its_watermark(
    tmp_path, monkeypatch, make_database, api
):
    harness, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, api, table={"lookback": {"daily": "0s"}, "schema": {}}
    )
    assert sync(harness).success
    api.records.clear()  # the API has nothing modified since
    daily = sync(harness, "daily")
    assert daily.success, failure_message(daily)
    assert materialization(daily)["sync_assets/rows_read"] == 0
    assert len(cached(cache_url)) == 45
    marks = [r["watermark_to"] for r in sync_log_rows(cache_url, "products")]
    assert marks[0] == marks[1]


def test_epoch_watermarks_are_sent_as_seconds(tmp_path, monkeypatch, make_database, api):
    table = {"incremental": {"param": "modified_since", "format": "epoch"}, "lookback": {"daily": "0s"}}
    harness, _ = harness_for(tmp_path, monkeypatch, make_database, api, table=table)
    assert sync(harness).success
    api.requests.clear()
    assert sync(harness, "daily").success
    assert api.data_requests()[0].args["modified_since"] == str(int(START.replace(minute=45).timestamp()))


def test_the_rate_limit_spaces_requests_out(tmp_path, monkeypatch, make_database, api):
    """Two requests a second: no three requests within one second. A lower bound on the spacing,
    which a slow machine only widens."""
    import time

    stamps: list[float] = []
    handle = api.handle
    api.handle = lambda request: (stamps.append(time.monotonic()), handle(request))[1]  # type: ignore[method-assign]
    api.server.clear()
    api.server.expect_request("/api/products").respond_with_handler(api.handle)
    table = {"paginate": {"style": "offset", "page_size": 9}}
    harness, cache_url = harness_for(
        tmp_path,
        monkeypatch,
        make_database,
        api,
        table=table,
        connection={"rate_limit": {"requests_per_second": 2}},
    )
    result = sync(harness)
    assert result.success, failure_message(result)
    assert len(stamps) == 6 and len(cached(cache_url)) == 45
    assert min(later - first for first, later in zip(stamps, stamps[2:], strict=False)) >= 0.95


def test_the_asset_says_where_its_rows_come_from(tmp_path, monkeypatch, make_database, api):
    harness, _ = harness_for(tmp_path, monkeypatch, make_database, api)
    spec = harness.defs.resolve_assets_def(dg.AssetKey(["legacy", "products"])).specs_by_key
    (only,) = spec.values()
    assert only.description == (
        "Cache table `products` synced from endpoint /api/products on `legacy`; incremental on `modified_date`."
    )


def test_reconciliation_compares_the_apis_reported_total_with_the_cache(
    tmp_path, monkeypatch, make_database, api
):
    table = {"paginate": {"style": "offset", "page_size": 20, "total_path": "total"}}
    harness, _ = harness_for(tmp_path, monkeypatch, make_database, api, table=table)
    key = dg.AssetKey(["legacy", "products"])
    assert [c.name for c in harness.defs.resolve_assets_def(key).check_specs if "fresh" not in c.name] == [
        "reconciliation"
    ]

    def reconciliation(result) -> dg.AssetCheckEvaluation:
        (found,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "reconciliation"]
        return found

    mass = sync(harness)
    assert reconciliation(mass).passed
    assert "the API reports 45 records and the cache holds as many" in reconciliation(mass).description
    del api.records[10]  # deleted at the source: an incremental does not delete it from the cache
    daily = sync(harness, "daily")
    found = reconciliation(daily)
    assert not found.passed and found.severity == dg.AssetCheckSeverity.WARN
    assert "the API reports 44 records, the cache holds 45" in found.description


def test_429_bursts_are_waited_out_as_retry_after_says(tmp_path, monkeypatch, make_database, api):
    api.faults = {1: too_many("1"), 2: too_many("1"), 4: unavailable, 5: unavailable}
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api)
    result = sync(harness)
    assert result.success, failure_message(result)
    assert len(cached(cache_url)) == 45
    assert len(api.data_requests()) == 3 + 4  # three pages, two 429s and two 503s
    logs = _logged(harness, result)
    assert sum("HTTP 429 from legacy" in m and "retrying in 1.0 s" in m for m in logs) == 2
    assert sum("HTTP 503 from legacy" in m for m in logs) == 2
    assert result.dagster_run.status.value == "SUCCESS"  # retried inside the sync, not as a step retry


def test_a_server_that_keeps_failing_fails_the_sync_naming_status_url_and_table(
    tmp_path, monkeypatch, make_database, api
):
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api)
    assert sync(harness).success
    api.requests.clear()  # faults count requests from here
    api.faults = {n: unavailable for n in range(1, 10)}
    result = sync(harness)
    assert not result.success
    message = failure_message(result)
    assert "table 'products': GET http://127.0.0.1:" in message
    assert "/api/products?offset=0&limit=20 returned 503 SERVICE UNAVAILABLE after 4 attempts" in message
    assert "(source connection 'legacy')" in message
    assert len(api.data_requests()) == 4
    assert len(cached(cache_url)) == 45  # the cache as it was
    assert sync_log_rows(cache_url, "products")[-1]["status"] == "failed"


def test_a_page_that_never_comes_times_out_and_changes_nothing(tmp_path, monkeypatch, make_database, api):
    harness, cache_url = harness_for(
        tmp_path,
        monkeypatch,
        make_database,
        api,
        connection={"timeout": "1s", "http_retries": {"max_attempts": 2, "backoff": "0.01s"}},
    )
    assert sync(harness).success
    api.requests.clear()  # faults count requests from here
    api.faults = {2: held_back(api), 3: held_back(api)}  # page 2 and its retry never answer
    result = sync(harness)
    assert not result.success
    message = failure_message(result)
    assert (
        "GET http://127.0.0.1:" in message
        and "offset=20&limit=20: no answer within 1 s after 2 attempts" in message
    )
    assert len(cached(cache_url)) == 45
    log = sync_log_rows(cache_url, "products")[-1]
    assert log["status"] == "failed" and "no answer within 1 s" in log["error"]


def test_other_4xx_fail_at_once_with_the_url_shown_without_the_api_key(
    tmp_path, monkeypatch, make_database, api
):
    monkeypatch.setenv("LEGACY_KEY", "k3y-never-shown")
    api.api_key = "the-right-key"
    connection = {"auth": {"api_key": {"query": "api_key", "value": "${LEGACY_KEY}"}}}
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api, connection=connection)
    result = sync(harness)
    assert not result.success
    message = failure_message(result)
    assert "returned 403 FORBIDDEN: wrong api key" in message and "api_key" not in message
    assert "k3y-never-shown" not in message
    assert len(api.data_requests()) == 1  # not retried
    assert api.data_requests()[0].args["api_key"] == "k3y-never-shown"
    logs = " ".join(_logged(harness, result)) + json.dumps(sync_log_rows(cache_url), default=str)
    assert "k3y-never-shown" not in logs


def test_bearer_and_header_keys_reach_the_api(tmp_path, monkeypatch, make_database, api):
    monkeypatch.setenv("LEGACY_TOKEN", "t0ken-value")
    api.token = "t0ken-value"
    harness, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, api, connection={"auth": {"bearer": "${LEGACY_TOKEN}"}}
    )
    result = sync(harness)
    assert result.success, failure_message(result)
    assert len(cached(cache_url)) == 45
    resource = harness.defs.resources["legacy"]
    assert "t0ken-value" not in resource.connection and "${LEGACY_TOKEN}" in resource.connection


@pytest.mark.parametrize(
    ("auth", "seen"),
    [
        (
            {"api_key": {"header": "X-Api-Key", "value": "${LEGACY_SECRET}"}},
            lambda r: r.headers.get("X-Api-Key"),
        ),
        ({"basic": {"username": "sync", "password": "${LEGACY_SECRET}"}}, lambda r: r.authorization.password),
    ],
    ids=["api-key-header", "basic"],
)
def test_header_keys_and_basic_auth_reach_the_api(tmp_path, monkeypatch, make_database, api, auth, seen):
    monkeypatch.setenv("LEGACY_SECRET", "hush-2f9")
    harness, _ = harness_for(tmp_path, monkeypatch, make_database, api, connection={"auth": auth})
    result = sync(harness)
    assert result.success, failure_message(result)
    assert {seen(r) for r in api.data_requests()} == {"hush-2f9"}
    assert "hush-2f9" not in harness.defs.resources["legacy"].connection


def test_an_expired_session_token_logs_in_again(tmp_path, monkeypatch, make_database, api):
    monkeypatch.setenv("LEGACY_PASSWORD", "s3cret-pw")
    api.sessions.append("stale")  # every request needs the newest session token
    api.expire_after = 2  # a session serves two pages
    login = {
        "endpoint": "/api/login",
        "body": {"user": "sync", "password": "${LEGACY_PASSWORD}"},
        "token": "data.token",
    }
    harness, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, api, connection={"auth": {"login": login}}
    )
    result = sync(harness)
    assert result.success, failure_message(result)
    assert len(cached(cache_url)) == 45
    assert api.logins == 2  # the first login, and one more when the session expired after page 2
    assert "s3cret-pw" not in " ".join(_logged(harness, result)) and "session-" not in " ".join(
        _logged(harness, result)
    )


def test_a_malformed_record_fails_naming_field_and_key_and_writes_nothing(
    tmp_path, monkeypatch, make_database, api
):
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api)
    assert sync(harness).success
    api.records[30] = product(31, price="abc")
    api.records[0] = product(1, name="changed")
    result = sync(harness)
    assert not result.success
    message = failure_message(result)
    assert "record id=31 (page 2, record 11): field 'price': 'abc' is not decimal(12,2)" in message
    assert cached(cache_url)[0]["product_name"] == "product 1"  # the cache as it was


def test_a_later_record_that_does_not_fit_the_first_pages_types_fails(
    tmp_path, monkeypatch, make_database, api
):
    api.records[25] = product(26, active="yes")
    harness, cache_url = harness_for(tmp_path, monkeypatch, make_database, api)
    result = sync(harness)
    assert not result.success
    assert (
        "record id=26 (page 2, record 6): field 'active': 'yes' is not boolean, the type the first page showed"
        in (failure_message(result))
    )
    assert not sa.inspect(sa.create_engine(cache_url)).has_table("products")


def test_a_response_that_is_not_json_names_the_url(tmp_path, monkeypatch, make_database, api):
    from werkzeug import Response

    api.faults = {1: lambda request: Response("<html>maintenance</html>", status=200)}
    harness, _ = harness_for(tmp_path, monkeypatch, make_database, api)
    result = sync(harness)
    assert not result.success
    assert "/api/products?offset=0&limit=20 did not return JSON (line 1, column 1)" in failure_message(result)


CATALOG = """\
connections:
  legacy: {type: rest, base_url: "${LEGACY_API_URL}"}
  erp: {url: "${ERP_URL}"}
  cache: {url: "sqlite:///cache.sqlite"}
cache: cache
tables:
  - name: products
    source: legacy
    endpoint: /api/products
    primary_key: [id]
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("    endpoint: /api/products", "    source_table: products"),
            ":8: table 'products': source: connection 'legacy' is a REST API: give the table `endpoint`",
        ),
        (
            ("    source: legacy", "    source: erp"),
            "`endpoint` needs a rest connection; 'erp' is a database",
        ),
        (
            ("cache: cache\n", "cache: legacy\n"),
            ":5: cache: connection 'legacy' is a REST API; the cache is a database",
        ),
        (
            ("    primary_key: [id]", "    primary_key: [id]\n    schema: {price: money}"),
            "`schema` column 'price': unknown type 'money'",
        ),
        (
            (
                "  legacy: {type: rest, ",
                "  legacy: {type: rest, auth: {bearer: x, basic: {username: u, password: p}}, ",
            ),
            "give exactly one of `bearer`, `api_key`, `basic` or `login`",
        ),
        (
            ("{type: rest, ", "{type: ftp, "),
            ":2: connections.legacy: `type` is sql (a database: the default), rest (a JSON API) or files (a folder)",
        ),
    ],
    ids=[
        "rest-table-without-endpoint",
        "endpoint-on-a-database",
        "rest-cache",
        "unknown-type",
        "two-auths",
        "unknown-kind",
    ],
)
def test_rest_catalog_mistakes_name_file_line_and_table(tmp_path, change, expected):
    old, new = change
    assert old in CATALOG
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.replace(old, new, 1))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert expected in str(info.value), info.value


def _logged(harness, result) -> list[str]:
    """What the run logged (its events and the sync's own lines)."""
    return [e.user_message for e in harness.instance.all_logs(result.run_id) if e.user_message]
