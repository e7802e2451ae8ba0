"""The Log Analytics query API over the data plane's events: `POST /v1/workspaces/{workspaceId}/query`.

Answers `{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows": [[...]]}]}` as
`azure-monitor-query`'s `LogsQueryClient.query_workspace` expects, for a small subset of KQL: one table, then
`where` (comparisons joined by `and`), `summarize count(), max(col) by cols`, `project`, `order by` / `sort by` and
`take` / `limit`. Anything else is refused as the service refuses a bad query: 400 `BadArgumentError`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from acr_emulator.api import Request, Response
from acr_emulator.state import EVENT_TABLES, State, format_time, parse_time, utcnow

# Column types from Azure Monitor's table reference; columns ACR does not have come last.
_COMMON = [
    ("TimeGenerated", "datetime"),
    ("Category", "string"),
    ("OperationName", "string"),
    ("LoginServer", "string"),
    ("Identity", "string"),
    ("CallerIpAddress", "string"),
    ("UserAgent", "string"),
    ("ResultType", "string"),
    ("ResultDescription", "string"),
    ("DurationMs", "string"),
    ("CorrelationId", "string"),
    ("Region", "string"),
    ("_ResourceId", "string"),
    ("_SubscriptionId", "string"),
    ("Type", "string"),
]
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "ContainerRegistryLoginEvents": [
        *_COMMON,
        ("JwtId", "string"),
        ("ScopesRequested", "dynamic"),
        ("ScopesGranted", "dynamic"),
    ],
    "ContainerRegistryRepositoryEvents": [
        *_COMMON,
        ("Repository", "string"),
        ("Tag", "string"),
        ("Digest", "string"),
        ("MediaType", "string"),
        ("ArtifactType", "string"),
        ("Size", "int"),
        ("UserTenantId", "string"),
        ("EventId", "string"),
    ],
}
assert set(SCHEMAS) == set(EVENT_TABLES)

_PATH = re.compile(r"^/v1/workspaces/([A-Za-z0-9-]{1,64})/query/?$")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<number>\d+(?:\.\d+)?(?P<unit>d|h|m|s|ms)?\b)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|=~|>=|<=|!=|[|(),<>=])
    )""",
    re.VERBOSE,
)
_BARE_DATETIME = re.compile(r"datetime\(\s*(\d[^)'\"]*?)\s*\)")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class QueryError(Exception):
    """A query outside the subset, or malformed: 400 BadArgumentError."""


@dataclass
class _Tok:
    kind: str  # string, number, name, op
    text: str
    value: Any


def tokenize(query: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    # datetime(2024-01-01T00:00:00Z), unquoted as KQL allows, becomes datetime('2024-01-01T00:00:00Z').
    text = _BARE_DATETIME.sub(r"datetime('\1')", query.strip())
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise QueryError(f"Syntax error near '{text[pos : pos + 20]}'.")
        pos = match.end()
        if match.group("string") is not None:
            raw = match.group("string")
            tokens.append(_Tok("string", raw, re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif match.group("number") is not None:
            raw = match.group("number")
            unit = match.group("unit")
            if unit:
                tokens.append(_Tok("timespan", raw, timedelta(seconds=float(raw[: -len(unit)]) * _UNITS[unit])))
            else:
                tokens.append(_Tok("number", raw, float(raw) if "." in raw else int(raw)))
        elif match.group("name") is not None:
            tokens.append(_Tok("name", match.group("name"), match.group("name")))
        else:
            tokens.append(_Tok("op", match.group("op"), match.group("op")))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Tok], columns: dict[str, str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.columns = dict(columns)  # name -> type, as the pipeline shapes it
        self.time_floor: str | None = None  # the last where's lower bound on TimeGenerated, formatted

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise QueryError("Unexpected end of query.")
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text:
            raise QueryError(f"Expected '{text}', found '{tok.text}'.")

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind in ("op", "name") and tok.text == text

    def column(self) -> str:
        tok = self.next()
        if tok.kind != "name":
            raise QueryError(f"Expected a column name, found '{tok.text}'.")
        if tok.text not in self.columns:
            raise QueryError(f"Failed to resolve scalar expression named '{tok.text}'.")
        return tok.text

    def literal(self, column_type: str) -> Any:
        tok = self.next()
        if tok.kind == "name" and tok.text in ("datetime", "ago", "now"):
            self.expect("(")
            if tok.text == "datetime":
                arg = self.next()
                if arg.kind != "string":
                    raise QueryError(f"Invalid datetime literal '{arg.text}'.")
                raw = arg.value
                self.expect(")")
                try:
                    return parse_time(str(raw))
                except ValueError as exc:
                    raise QueryError(f"Invalid datetime literal '{raw}'.") from exc
            if tok.text == "ago":
                span = self.next()
                if span.kind != "timespan":
                    raise QueryError("ago() takes a timespan such as 1h or 30d.")
                self.expect(")")
                return utcnow() - span.value
            self.expect(")")
            return utcnow()
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.kind == "name" and tok.text in ("true", "false"):
            return tok.text == "true"
        raise QueryError(f"Expected a literal, found '{tok.text}'.")


Row = dict[str, Any]
Predicate = Callable[[Row], bool]


def _comparable(value: Any) -> Any:
    # Event times are written by format_time, whose fixed-width UTC form sorts as the times do.
    return format_time(value) if isinstance(value, datetime) else value


def _compare(column: str, op: str, value: Any) -> Predicate:
    value = _comparable(value)

    def get(row: Row) -> Any:
        return row.get(column)

    if op == "==":
        return lambda row: get(row) == value
    if op == "!=":
        return lambda row: get(row) != value
    if op == "=~":
        folded = str(value).lower()
        return lambda row: str(get(row) or "").lower() == folded
    if op == ">":
        return lambda row: get(row) is not None and get(row) > value
    if op == ">=":
        return lambda row: get(row) is not None and get(row) >= value
    if op == "<":
        return lambda row: get(row) is not None and get(row) < value
    if op == "<=":
        return lambda row: get(row) is not None and get(row) <= value
    raise QueryError(f"Operator '{op}' is not supported.")


def _where(parser: _Parser) -> Predicate:
    predicates: list[Predicate] = []
    while True:
        column = parser.column()
        tok = parser.next()
        if tok.kind == "name" and tok.text in ("in", "in~"):
            parser.expect("(")
            values = [_comparable(parser.literal(parser.columns[column]))]
            while parser.at(","):
                parser.next()
                values.append(_comparable(parser.literal(parser.columns[column])))
            parser.expect(")")
            allowed = frozenset(values)
            predicates.append(partial(_is_in, column, allowed))
        elif tok.kind == "op" and tok.text in ("==", "=~", "!=", ">", ">=", "<", "<="):
            value = parser.literal(parser.columns[column])
            if column == "TimeGenerated" and tok.text in (">", ">=") and isinstance(value, datetime):
                # A lower bound the scan may start from (rows before it cannot pass).
                parser.time_floor = max(parser.time_floor or "", format_time(value))
            predicates.append(_compare(column, tok.text, value))
        else:
            raise QueryError(f"Operator '{tok.text}' is not supported in this emulator's KQL subset.")
        if parser.at("and"):
            parser.next()
            continue
        break
    if len(predicates) == 1:
        return predicates[0]
    return lambda row: all(p(row) for p in predicates)


def _summarize(parser: _Parser, rows: Iterable[Row]) -> list[Row]:  # noqa: C901 - one pass, several aggregates
    aggregates: list[tuple[str, str, str | None]] = []  # (output name, function, column)
    while True:
        alias = None
        following = parser.tokens[parser.pos + 1] if parser.pos + 1 < len(parser.tokens) else None
        if following is not None and following.text == "=":
            alias = parser.next().text
            parser.next()
        func = parser.next()
        if func.kind != "name" or func.text not in ("count", "max", "min"):
            raise QueryError(f"Aggregation '{func.text}' is not supported; use count(), max() or min().")
        parser.expect("(")
        column = None
        if func.text != "count":
            column = parser.column()
        parser.expect(")")
        name = alias or ("count_" if func.text == "count" else f"{func.text}_{column}")
        aggregates.append((name, func.text, column))
        if parser.at(","):
            parser.next()
            continue
        break
    keys: list[str] = []
    if parser.at("by"):
        parser.next()
        keys.append(parser.column())
        while parser.at(","):
            parser.next()
            keys.append(parser.column())
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in keys)
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = [0 if f == "count" else None for _, f, _ in aggregates]
        for i, (_, fn, column) in enumerate(aggregates):
            if fn == "count":
                acc[i] += 1
                continue
            value = row.get(column) if column else None
            if value is None:
                continue
            if acc[i] is None or (value > acc[i] if fn == "max" else value < acc[i]):
                acc[i] = value
    if not keys and not groups:
        groups[()] = [0 if f == "count" else None for _, f, _ in aggregates]
    types = {k: parser.columns[k] for k in keys}
    for name, fn, column in aggregates:
        types[name] = "long" if fn == "count" else parser.columns[column or ""]
    parser.columns = types
    return [
        {**dict(zip(keys, key, strict=True)), **{a[0]: v for a, v in zip(aggregates, acc, strict=True)}}
        for key, acc in groups.items()
    ]


def _order_spec(parser: _Parser) -> list[tuple[str, bool]]:
    """`by Column [asc|desc], ...` as (column, descending) pairs."""
    parser.expect("by")
    spec: list[tuple[str, bool]] = []
    while True:
        column = parser.column()
        descending = True  # KQL sorts descending unless told
        if parser.at("asc") or parser.at("desc"):
            descending = parser.next().text == "desc"
        spec.append((column, descending))
        if parser.at(","):
            parser.next()
            continue
        return spec


def _is_in(column: str, allowed: frozenset[Any], row: Row) -> bool:
    return row.get(column) in allowed


def _sort_key(column: str, row: Row) -> tuple[bool, Any]:
    value = row.get(column)
    return (value is not None, value if value is not None else 0)


def _sorted(rows: list[Row], spec: list[tuple[str, bool]]) -> list[Row]:
    for column, descending in reversed(spec):
        rows.sort(key=partial(_sort_key, column), reverse=descending)
    return rows


def _first_at_or_after(rows: Sequence[Row], floor: str) -> int:
    """Binary search in rows sorted by TimeGenerated: the index of the first row at or after `floor`."""
    low, high = 0, len(rows)
    while low < high:
        mid = (low + high) // 2
        if rows[mid].get("TimeGenerated", "") < floor:
            low = mid + 1
        else:
            high = mid
    return low


def run_query(
    query: str,
    tables: Mapping[str, Sequence[Row]],
    window: tuple[datetime, datetime] | None,
    in_order: Mapping[str, bool] | None = None,
) -> dict:
    """Run `query` over `tables` (name -> rows), limited to TimeGenerated within `window` if given; the answer
    body of the query API. Rows stream through `where`, `project` and `take`; when a table's rows are in time order
    (`in_order`), a lower bound on TimeGenerated is found by binary search and `order by TimeGenerated asc` costs
    nothing, so reading a table page by page does not scan it all each time."""
    tokens = tokenize(query)
    if not tokens or tokens[0].kind != "name":
        raise QueryError("A query starts with a table name.")
    table = tokens[0].text
    if table not in SCHEMAS:
        raise QueryError(f"Failed to resolve table or column expression named '{table}'.")
    parser = _Parser(tokens, dict(SCHEMAS[table]))
    parser.pos = 1
    source = tables[table]
    ordered = bool(in_order and in_order.get(table))  # the stream is in time order
    predicates: list[Predicate] = []
    floor = ""
    if window is not None:
        start, end = format_time(window[0]), format_time(window[1])
        floor = start
        predicates.append(lambda row: start <= row.get("TimeGenerated", "") <= end)
    stream: Iterable[Row] | None = None  # None while only `where` has been seen
    while parser.peek() is not None:
        parser.expect("|")
        op = parser.next()
        if op.text == "where":
            parser.time_floor = None
            predicate = _where(parser)
            if stream is None:
                predicates.append(predicate)
                floor = max(floor, parser.time_floor or "")
            else:
                stream = filter(predicate, stream)
            continue
        if stream is None:
            stream = _scan(source, predicates, floor if ordered else "")
        if op.text == "summarize":
            stream = _summarize(parser, stream)
            ordered = False
        elif op.text == "project":
            projection = [parser.column()]
            while parser.at(","):
                parser.next()
                projection.append(parser.column())
            parser.columns = {c: parser.columns[c] for c in projection}
        elif op.text in ("order", "sort"):
            spec = _order_spec(parser)
            if not (ordered and spec == [("TimeGenerated", False)]):
                stream = _sorted(list(stream), spec)
                ordered = spec == [("TimeGenerated", False)]
        elif op.text in ("take", "limit"):
            tok = parser.next()
            if tok.kind != "number" or not isinstance(tok.value, int):
                raise QueryError(f"{op.text} takes a whole number.")
            stream = itertools.islice(stream, tok.value)
        else:
            raise QueryError(f"Operator '{op.text}' is not supported in this emulator's KQL subset.")
    if stream is None:
        stream = _scan(source, predicates, floor if ordered else "")
    columns = list(parser.columns.items())
    names = [name for name, _ in columns]
    return {
        "tables": [
            {
                "name": "PrimaryResult",
                "columns": [{"name": name, "type": kind} for name, kind in columns],
                "rows": [[row.get(name) for name in names] for row in stream],
            }
        ]
    }


def _scan(source: Sequence[Row], predicates: list[Predicate], floor: str) -> Iterable[Row]:
    """The source's rows passing every predicate, lazily; from the first row at or after `floor` when given (the
    rows are then in time order)."""
    rows: Iterable[Row] = itertools.islice(source, _first_at_or_after(source, floor), None) if floor else source
    if not predicates:
        return rows
    if len(predicates) == 1:
        return filter(predicates[0], rows)
    return (r for r in rows if all(p(r) for p in predicates))


def parse_timespan(value: Any, now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """ISO 8601 `start/end`, `start/duration` or a duration ending now; None for no timespan."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise QueryError("timespan must be an ISO 8601 interval or duration.")
    now = now or utcnow()
    first, sep, second = value.partition("/")
    try:
        if not sep:
            return now - _duration(first), now
        start = parse_time(first)
        end = start + _duration(second) if second.startswith("P") else parse_time(second)
    except ValueError as exc:
        raise QueryError(f"Invalid timespan '{value}'.") from exc
    return start, end


def _duration(value: str) -> timedelta:
    match = _DURATION.match(value)
    if match is None or value in ("P", "PT"):
        raise ValueError(value)
    days, hours, minutes, seconds = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0))


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


class LogAnalytics:
    """Routes: `POST /v1/workspaces/{workspaceId}/query`. Every workspace holds every registry's events, as if
    each registry's diagnostic setting sent its logs there."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {}

    def match(self, method: str, path: str) -> Callable[[Request], Response] | None | bool:
        """The handler for `path`; False when the path is not this service's; None for a wrong method."""
        if not _PATH.match(path):
            return False
        return self.query if method == "POST" else None

    def query(self, req: Request) -> Response:
        scheme, _, credential = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return _error(401, "AuthorizationRequiredError", "Valid authentication was not provided.")
        try:
            body = json.loads(req.body or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise QueryError("The request body must be a JSON object with a 'query' string.")
            window = parse_timespan(body.get("timespan"))
            with self.state.lock:
                answer = run_query(body["query"], self.state.events, window, self.state.events_in_order)
        except QueryError as exc:
            return _error(400, "BadArgumentError", f"The request had some invalid properties. {exc}")
        except ValueError:
            return _error(400, "BadArgumentError", "The request body is not valid JSON.")
        return Response(200, answer)
