"""Catalog models of a REST API source: the connection (base URL, auth, rate limit, retries) and
how a table reads an endpoint (where the records are, pagination, the modified-since filter)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from sync_assets.catalog.durations import Duration
from sync_assets.catalog.operations import Retries


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKey(_Strict):
    """A key sent in a header or in the query string; `value` is usually ${VAR}."""

    value: str = Field(min_length=1)
    header: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKey:
        if (self.header is None) == (self.query is None):
            msg = "give exactly one of `header` or `query` for the api_key"
            raise ValueError(msg)
        return self


class Basic(_Strict):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class Login(_Strict):
    """A login endpoint that returns a session token, sent as a bearer token afterwards.

    The body is posted as JSON (its values may hold ${VAR}); `token` is where the token is in
    the response. A 401 later (the token expired) logs in again, once per request.
    """

    endpoint: str = Field(min_length=1)
    body: dict[str, str] = Field(default_factory=dict)
    token: str = Field(
        default="token", description="path of the token in the login response, e.g. data.token"
    )


class RestAuth(_Strict):
    bearer: str | None = Field(default=None, description="the token, usually ${VAR}")
    api_key: ApiKey | None = None
    basic: Basic | None = None
    login: Login | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RestAuth:
        given = [k for k in ("bearer", "api_key", "basic", "login") if getattr(self, k) is not None]
        if len(given) != 1:
            msg = "give exactly one of `bearer`, `api_key`, `basic` or `login`"
            raise ValueError(msg)
        return self


class RateLimit(_Strict):
    requests_per_second: PositiveFloat


class HttpRetries(_Strict):
    """Retries of one request that got a 429, a 5xx or no answer, inside the sync.

    A `Retry-After` header sets the wait (up to `max_backoff`); otherwise it doubles from
    `backoff`, with jitter.
    """

    max_attempts: PositiveInt = 5
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(seconds=60)


class RestConnectionSpec(_Strict):
    """A JSON API; `base_url`, the auth values and `headers` may hold ${VAR} placeholders."""

    type: Literal["rest"]
    base_url: str = Field(min_length=1)
    auth: RestAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None
    timeout: Duration = Field(
        default=timedelta(seconds=30), description="connect and read timeout of a request"
    )
    http_retries: HttpRetries = Field(default_factory=HttpRetries)
    max_parallel: PositiveInt | None = Field(default=None, description="tables of this source synced at once")
    # Dagster's step retries: a REST source retries inside the sync, so none by default.
    retries: Retries = Field(default_factory=lambda: Retries(max_retries=0))
    demo: Literal[False] = False


class Pagination(_Strict):
    """How an endpoint pages: `offset` (offset and limit), `page` (a page number and a size),
    `cursor` (a token from the body, sent back), `link` (a next URL in the body or the Link
    header), or `none` (one response)."""

    style: Literal["offset", "page", "cursor", "link", "none"] = "none"
    page_size: PositiveInt = 100
    offset_param: str = "offset"
    limit_param: str = "limit"
    page_param: str = "page"
    first_page: int = 1
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    next_path: str | None = Field(
        default=None, description="path of the next URL in the body; else the Link header"
    )
    total_path: str | None = Field(
        default=None, description="where a response reports the endpoint's record count (reconciliation)"
    )


class Incremental(_Strict):
    """The query parameter a daily or hourly sends the watermark in (lookback included)."""

    param: str = Field(min_length=1)
    format: Literal["iso", "epoch"] = "iso"
