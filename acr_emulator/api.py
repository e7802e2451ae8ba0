"""The Microsoft.ContainerRegistry ARM resources the emulator serves: routing, validation and responses.

Nothing here knows about sockets; `server.py` feeds parsed requests in and writes the responses out.
Every handler runs with `state.lock` held.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from acr_emulator import names
from acr_emulator.dataplane import DataPlaneConfig
from acr_emulator.state import (
    Operation,
    PasswordSlot,
    Registry,
    ScopeMap,
    State,
    Token,
    format_time,
    parse_time,
    system_scope_maps,
    utcnow,
)

T = TypeVar("T")
API_VERSION = "2025-11-01"
PROVIDER = "microsoft.containerregistry"
# Per registry, for tokens and (separately) for user-defined scope maps.
SKU_LIMITS = {"Basic": 100, "Standard": 500, "Premium": 50_000}

_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)/(?P<kind>scopeMaps|tokens)/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


class ArmError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lowercased names
    body: bytes
    base_url: str  # scheme://host[:port] as the client reached us, for absolute URLs we hand out
    lro_fail: bool = False
    raw_query: str = ""  # for parameters that may repeat (a token request's scope)
    client_address: str = ""


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Route:
    operation: str | None
    handler: Callable[..., Response]
    params: dict[str, str]


def not_found(kind: str, name: str, parent: str | None = None) -> ArmError:
    where = f" under {parent}" if parent else ""
    return ArmError(404, "ResourceNotFound", f"The resource '{kind}/{name}'{where} was not found.", target=name)


def bad_request(code: str, message: str, target: str | None = None) -> ArmError:
    return ArmError(400, code, message, target)


class Api:
    def __init__(self, state: State, lro_polls: int = 1, page_size: int = 50, lro_retry_after: float = 0) -> None:
        self.state = state
        self.lro_polls = lro_polls
        # Seconds a long-running operation's answers tell the client to wait before polling (Retry-After).
        self.lro_retry_after = lro_retry_after
        self.page_size = page_size
        self.data_plane = DataPlaneConfig()
        # Set by anything that changes state, so the server knows when to write the state file.
        self.dirty = False

    # ---- routing -----------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Route | None:
        segs = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        low = [s.lower() for s in segs]
        if len(segs) < 2 or low[0] != "subscriptions":
            return None
        if len(segs) >= 4 and low[-2] in ("operationstatuses", "operationresults"):
            location = low[-2] == "operationresults"
            return self._pick(
                method,
                {"GET": ("operations.get", self.get_operation)},
                op_id=segs[-1],
                location="1" if location else "",
            )
        sub = segs[1]
        if low[2:] == ["providers", PROVIDER, "registries"]:
            return self._pick(method, {"GET": ("registries.list", self.list_registries)}, sub=sub, rg="")
        if len(segs) < 7 or low[2] != "resourcegroups" or low[4:7] != ["providers", PROVIDER, "registries"]:
            return None
        rg, rest, low_rest = segs[3], segs[7:], low[7:]
        if not rest:
            return self._pick(method, {"GET": ("registries.list", self.list_registries)}, sub=sub, rg=rg)
        reg = rest[0]
        if len(rest) == 1:
            table = {
                "GET": ("registries.get", self.get_registry),
                "PUT": ("registries.create", self.put_registry),
                "PATCH": ("registries.update", self.patch_registry),
                "DELETE": ("registries.delete", self.delete_registry),
            }
            return self._pick(method, table, sub=sub, rg=rg, reg=reg)
        if low_rest[1:] == ["generatecredentials"]:
            table = {"POST": ("registries.generate_credentials", self.generate_credentials)}
            return self._pick(method, table, sub=sub, rg=rg, reg=reg)
        kinds = {"scopemaps": "scope_maps", "tokens": "tokens"}
        if low_rest[1] not in kinds or len(rest) > 3:
            return None
        kind = kinds[low_rest[1]]
        if len(rest) == 2:
            list_handler = self.list_scope_maps if kind == "scope_maps" else self.list_tokens
            return self._pick(method, {"GET": (f"{kind}.list", list_handler)}, sub=sub, rg=rg, reg=reg)
        handlers = {
            "scope_maps": (
                self.get_scope_map,
                self.put_scope_map,
                self.patch_scope_map,
                self.delete_scope_map,
            ),
            "tokens": (self.get_token, self.put_token, self.patch_token, self.delete_token),
        }[kind]
        # Handlers of one shape each (they take the resource's name): typed loosely, as _pick calls them by keyword.
        by_name: dict[str, tuple[str, Any]] = {
            m: (f"{kind}.{op}", h)
            for m, op, h in zip(
                ("GET", "PUT", "PATCH", "DELETE"),
                ("get", "create", "update", "delete"),
                handlers,
                strict=True,
            )
        }
        return self._pick(method, by_name, sub=sub, rg=rg, reg=reg, name=rest[2])

    def _pick(self, method: str, table: dict[str, tuple[str, Callable[..., Response]]], **params: str) -> Route:
        if method in table:
            operation, handler = table[method]
            return Route(operation, handler, params)

        def refuse(req: Request, **_: str) -> Response:
            raise ArmError(405, "MethodNotAllowed", f"The method '{req.method}' is not supported here.")

        return Route(None, refuse, params)

    # ---- helpers -----------------------------------------------------------------------------------

    def _json(self, req: Request) -> dict[str, Any]:
        if not req.body.strip():
            raise bad_request("InvalidRequestContent", "The request content is empty.")
        try:
            data = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request("InvalidRequestContent", f"The request content is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise bad_request("InvalidRequestContent", "The request content must be a JSON object.")
        return data

    @staticmethod
    def _properties(body: dict[str, Any]) -> dict[str, Any]:
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise bad_request("InvalidRequestContent", "'properties' must be an object.", "properties")
        return props

    def _registry(self, sub: str, rg: str, name: str) -> Registry:
        registry = self.state.registries.get(name.lower())
        if registry is None or not registry.in_scope(sub, rg):
            raise not_found("Microsoft.ContainerRegistry/registries", name, f"resource group '{rg}'")
        return registry

    def _url(self, req: Request, path: str, **query: str) -> str:
        params = urllib.parse.urlencode({"api-version": API_VERSION, **query}, safe="$")
        return f"{req.base_url}{path}?{params}"

    def _start(self, pending: str, result: str, target: list[str] | None, kind: str = "async") -> Operation:
        remaining = 1 if kind == "location" else self.lro_polls
        op = Operation(
            id=secrets.token_hex(12),
            kind=kind,
            pending_status=pending,
            result=result,
            remaining=remaining,
            start_time=format_time(utcnow()),
            target=target,
        )
        self.state.operations[op.id] = op
        resource = self._target(target)
        if resource is not None:
            resource.pending_operation = op.id
            resource.provisioning_state = pending
        self.dirty = True
        return op

    def _target(self, target: list[str] | None) -> Registry | ScopeMap | Token | None:
        if not target:
            return None
        kind, reg_key, child = target
        registry = self.state.registries.get(reg_key)
        if registry is None or kind == "registry":
            return registry
        return (registry.scope_maps if kind == "scope_map" else registry.tokens).get(child)

    def _observe(self, op: Operation) -> None:
        """One look at a pending operation (a poll, or a GET of its resource) moves it one step on."""
        if op.end_time is not None:
            return
        self.dirty = True
        if op.remaining > 0:
            op.remaining -= 1
            return
        op.end_time = format_time(utcnow())
        resource = self._target(op.target)
        if resource is not None and resource.pending_operation == op.id:
            resource.pending_operation = None
            resource.provisioning_state = op.result

    def _observe_resource(self, resource: Registry | ScopeMap | Token) -> None:
        op = self.state.operations.get(resource.pending_operation or "")
        if op is not None:
            self._observe(op)

    def _async_response(
        self, req: Request, status: int, body: Any, resource_path: str, op: Operation, location: bool = False
    ) -> Response:
        headers = {
            "Azure-AsyncOperation": self._url(req, f"{resource_path}/operationStatuses/{op.id}"),
            **self._retry_after(),
        }
        if location:
            headers["Location"] = self._url(req, f"{resource_path}/operationResults/{op.id}")
        return Response(status, body, headers)

    def _retry_after(self) -> dict[str, str]:
        # Whole seconds in Retry-After, as ARM sends them (the SDK reads some operations' Retry-After as an int).
        # A fraction goes out as retry-after-ms instead, which azure-core's poller also honours: quick local runs.
        value = self.lro_retry_after
        if value == int(value):
            return {"Retry-After": str(int(value))}
        return {"retry-after-ms": str(round(value * 1000))}

    def _deleted(self, req: Request) -> Response:
        op = self._start("Deleting", "Succeeded", None, kind="location")
        return Response(
            202, None, {"Location": self._url(req, f"{req.path}/operationResults/{op.id}"), **self._retry_after()}
        )

    def _page(self, req: Request, items: dict[str, T], to_json: Callable[[T], dict[str, Any]]) -> Response:
        # Sorted by key, and the skip token names the last key served: deletions between pages then
        # neither repeat nor skip anything. Only the page's own items are turned into JSON, so reading a
        # large registry page by page costs in proportion to its size, as it does in Azure.
        keys = sorted(items)
        start = 0
        token = req.query.get("$skipToken") or req.query.get("$skiptoken")
        if token:
            try:
                after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise bad_request("InvalidSkipToken", "The skip token is not valid.", "$skipToken") from exc
            start = bisect.bisect_right(keys, after)
        page = keys[start : start + self.page_size]
        body: dict[str, Any] = {"value": [to_json(items[key]) for key in page]}
        if start + self.page_size < len(keys):
            skip = base64.urlsafe_b64encode(page[-1].encode()).decode().rstrip("=")
            body["nextLink"] = self._url(req, req.path, **{"$skipToken": skip})
        return Response(200, body)

    # ---- JSON shapes -------------------------------------------------------------------------------

    def registry_json(self, registry: Registry) -> dict[str, Any]:
        return {
            "id": registry.id,
            "name": registry.name,
            "type": "Microsoft.ContainerRegistry/registries",
            "location": registry.location,
            "tags": dict(registry.tags),
            "sku": {"name": registry.sku, "tier": registry.sku},
            "properties": {
                "loginServer": self.data_plane.login_server(registry),
                "creationDate": registry.creation_date,
                "provisioningState": registry.provisioning_state,
                "adminUserEnabled": registry.admin_user_enabled,
                "publicNetworkAccess": "Enabled",
                "anonymousPullEnabled": False,
                "dataEndpointEnabled": False,
                "zoneRedundancy": "Disabled",
            },
        }

    @staticmethod
    def scope_map_json(registry: Registry, scope_map: ScopeMap) -> dict[str, Any]:
        props: dict[str, Any] = {
            "type": scope_map.type,
            "creationDate": scope_map.creation_date,
            "provisioningState": scope_map.provisioning_state,
            "actions": list(scope_map.actions),
        }
        if scope_map.description is not None:
            props["description"] = scope_map.description
        return {
            "id": f"{registry.id}/scopeMaps/{scope_map.name}",
            "name": scope_map.name,
            "type": "Microsoft.ContainerRegistry/registries/scopeMaps",
            "properties": props,
        }

    @staticmethod
    def token_json(registry: Registry, token: Token) -> dict[str, Any]:
        scope_map = registry.scope_maps.get(token.scope_map)
        scope_map_name = scope_map.name if scope_map else token.scope_map
        passwords = [
            {"name": slot.name, "creationTime": slot.creation_time} | ({"expiry": slot.expiry} if slot.expiry else {})
            for _, slot in sorted(token.passwords.items())
        ]
        return {
            "id": f"{registry.id}/tokens/{token.name}",
            "name": token.name,
            "type": "Microsoft.ContainerRegistry/registries/tokens",
            "properties": {
                "creationDate": token.creation_date,
                "provisioningState": token.provisioning_state,
                "scopeMapId": f"{registry.id}/scopeMaps/{scope_map_name}",
                "credentials": {"certificates": [], "passwords": passwords},
                "status": token.status,
            },
        }

    # ---- registries --------------------------------------------------------------------------------

    def list_registries(self, req: Request, sub: str, rg: str) -> Response:
        items = {key: r for key, r in self.state.registries.items() if r.in_scope(sub, rg or None)}
        return self._page(req, items, self.registry_json)

    def get_registry(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self._registry(sub, rg, reg)
        self._observe_resource(registry)
        return Response(200, self.registry_json(registry))

    @staticmethod
    def _sku(body: dict[str, Any], required: bool) -> str | None:
        sku = body.get("sku")
        if sku is None and not required:
            return None
        raw = sku.get("name") if isinstance(sku, dict) else None
        for known in SKU_LIMITS:
            if isinstance(raw, str) and raw.lower() == known.lower():
                return known
        raise bad_request(
            "InvalidSku", f"The SKU '{raw}' is not valid; use one of {', '.join(SKU_LIMITS)}.", "sku.name"
        )

    @staticmethod
    def _check_sku_fits(registry: Registry, sku: str) -> None:
        limit = SKU_LIMITS[sku]
        user_maps = sum(1 for m in registry.scope_maps.values() if not m.system)
        if len(registry.tokens) > limit or user_maps > limit:
            raise ArmError(
                409,
                "QuotaExceeded",
                f"The registry has more tokens or scope maps than the {sku} SKU allows ({limit}).",
                "sku.name",
            )

    def put_registry(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        body = self._json(req)
        if not names.REGISTRY_NAME.match(reg):
            raise bad_request(
                "InvalidRegistryName", "Registry names must be 5-50 alphanumeric characters.", "registryName"
            )
        existing = self.state.registries.get(reg.lower())
        if existing is not None and not existing.in_scope(sub, rg):
            raise ArmError(
                409, "AlreadyInUse", f"The registry DNS name {reg.lower()}.azurecr.io is already in use.", reg
            )
        location = body.get("location")
        if not isinstance(location, str) or not location.strip():
            raise bad_request("LocationRequired", "The location property is required.", "location")
        sku = self._sku(body, required=True)
        assert sku is not None
        props = self._properties(body)
        admin = props.get("adminUserEnabled", False)
        if not isinstance(admin, bool):
            raise bad_request("InvalidRequestContent", "adminUserEnabled must be a boolean.", "adminUserEnabled")
        tags = body.get("tags") or {}
        path = req.path
        if existing is not None:
            if req.lro_fail:
                op = self._start("Updating", "Failed", None)
                return self._async_response(req, 200, self.registry_json(existing), path, op)
            self._check_sku_fits(existing, sku)
            existing.location, existing.sku, existing.admin_user_enabled = location, sku, admin
            existing.tags = dict(tags)
            # A PUT over a registry whose creation failed is the retry that repairs it.
            existing.provisioning_state, existing.pending_operation = "Succeeded", None
            self.dirty = True
            return Response(200, self.registry_json(existing))
        now = format_time(utcnow())
        registry = Registry(
            name=reg,
            subscription_id=sub,
            resource_group=rg,
            location=location,
            sku=sku,
            admin_user_enabled=admin,
            tags=dict(tags),
            creation_date=now,
            scope_maps=system_scope_maps(now),
        )
        self.state.registries[reg.lower()] = registry
        self.data_plane.claim(self.state, registry)
        self.dirty = True
        if req.lro_fail:
            op = self._start("Creating", "Failed", ["registry", reg.lower(), ""])
            return self._async_response(req, 201, self.registry_json(registry), path, op)
        return Response(200, self.registry_json(registry))

    def patch_registry(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self._registry(sub, rg, reg)
        body = self._json(req)
        sku = self._sku(body, required=False)
        props = self._properties(body)
        admin = props.get("adminUserEnabled")
        if admin is not None and not isinstance(admin, bool):
            raise bad_request("InvalidRequestContent", "adminUserEnabled must be a boolean.", "adminUserEnabled")
        if req.lro_fail:
            op = self._start("Updating", "Failed", None)
            return self._async_response(req, 200, self.registry_json(registry), req.path, op)
        if sku is not None:
            self._check_sku_fits(registry, sku)
            registry.sku = sku
        if admin is not None:
            registry.admin_user_enabled = admin
        if isinstance(body.get("tags"), dict):
            registry.tags = dict(body["tags"])
        self.dirty = True
        return Response(200, self.registry_json(registry))

    def delete_registry(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self.state.registries.get(reg.lower())
        if registry is None or not registry.in_scope(sub, rg):
            return Response(204)  # ARM deletes are idempotent
        if req.lro_fail:
            op = self._start("Deleting", "Failed", None)
            return self._async_response(req, 202, None, req.path, op, location=True)
        del self.state.registries[reg.lower()]
        return self._deleted(req)

    # ---- scope maps --------------------------------------------------------------------------------

    @staticmethod
    def _actions(value: Any) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
            raise bad_request("InvalidScopeMapActions", "actions must be a non-empty list of strings.", "actions")
        actions = list(dict.fromkeys(value))
        if len(actions) > names.MAX_ACTIONS_PER_SCOPE_MAP:
            raise bad_request(
                "InvalidScopeMapActions",
                f"A scope map may hold at most {names.MAX_ACTIONS_PER_SCOPE_MAP} actions; got {len(actions)}.",
                "actions",
            )
        for action in actions:
            try:
                names.parse_action(action)
            except ValueError as exc:
                raise bad_request("InvalidScopeMapActions", str(exc), "actions") from exc
        return actions

    @staticmethod
    def _description(props: dict[str, Any]) -> str | None:
        description = props.get("description")
        if description is not None and not isinstance(description, str):
            raise bad_request("InvalidRequestContent", "description must be a string.", "description")
        return description

    @staticmethod
    def _refuse_system(scope_map: ScopeMap) -> None:
        raise bad_request(
            "SystemScopeMapReadOnly",
            f"The scope map '{scope_map.name}' is system defined and cannot be changed or deleted.",
            scope_map.name,
        )

    def list_scope_maps(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self._registry(sub, rg, reg)
        return self._page(req, registry.scope_maps, lambda m: self.scope_map_json(registry, m))

    def get_scope_map(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        scope_map = registry.scope_maps.get(name.lower())
        if scope_map is None:
            raise not_found("scopeMaps", name, f"registry '{registry.name}'")
        self._observe_resource(scope_map)
        return Response(200, self.scope_map_json(registry, scope_map))

    def put_scope_map(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        existing = registry.scope_maps.get(name.lower())
        if existing is not None and existing.system:
            self._refuse_system(existing)
        if not names.SCOPE_MAP_NAME.match(name) or name.startswith("_"):
            raise bad_request(
                "InvalidScopeMapName",
                "Scope map names must be 5-50 characters of letters, digits, '-' and '_', "
                "and may not start with '_' (reserved for system scope maps).",
                "scopeMapName",
            )
        props = self._properties(self._json(req))
        actions = self._actions(props.get("actions"))
        description = self._description(props)
        if existing is None:
            limit = SKU_LIMITS[registry.sku]
            if sum(1 for m in registry.scope_maps.values() if not m.system) >= limit:
                raise ArmError(
                    409,
                    "QuotaExceeded",
                    f"The registry already has {limit} scope maps, the most its {registry.sku} SKU allows.",
                    "scopeMapName",
                )
        if req.lro_fail:
            if existing is not None:
                op = self._start("Updating", "Failed", None)
                return self._async_response(req, 200, self.scope_map_json(registry, existing), req.path, op)
            scope_map = ScopeMap(
                name=name, actions=actions, description=description, creation_date=format_time(utcnow())
            )
            registry.scope_maps[name.lower()] = scope_map
            op = self._start("Creating", "Failed", ["scope_map", registry.name.lower(), name.lower()])
            return self._async_response(req, 201, self.scope_map_json(registry, scope_map), req.path, op)
        if existing is not None:
            existing.actions, existing.description = actions, description
            existing.provisioning_state, existing.pending_operation = "Succeeded", None
            scope_map = existing
        else:
            scope_map = ScopeMap(
                name=name, actions=actions, description=description, creation_date=format_time(utcnow())
            )
            registry.scope_maps[name.lower()] = scope_map
        self.dirty = True
        # Real ARM answered a scope-map PUT with 200 and a finished resource, new or not.
        return Response(200, self.scope_map_json(registry, scope_map))

    def patch_scope_map(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        scope_map = registry.scope_maps.get(name.lower())
        if scope_map is None:
            raise not_found("scopeMaps", name, f"registry '{registry.name}'")
        if scope_map.system:
            self._refuse_system(scope_map)
        props = self._properties(self._json(req))
        actions = self._actions(props["actions"]) if "actions" in props else None
        description = self._description(props)
        if req.lro_fail:
            op = self._start("Updating", "Failed", None)
            return self._async_response(req, 200, self.scope_map_json(registry, scope_map), req.path, op)
        if actions is not None:
            scope_map.actions = actions
        if "description" in props:
            scope_map.description = description
        self.dirty = True
        return Response(200, self.scope_map_json(registry, scope_map))

    def delete_scope_map(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        scope_map = registry.scope_maps.get(name.lower())
        if scope_map is None:
            return Response(204)
        if scope_map.system:
            self._refuse_system(scope_map)
        users = sorted(t.name for t in registry.tokens.values() if t.scope_map == name.lower())
        if users:
            raise ArmError(
                409,
                "ScopeMapInUse",
                f"The scope map '{scope_map.name}' is used by tokens: {', '.join(users)}. "
                "Delete them or point them at another scope map first.",
                scope_map.name,
            )
        if req.lro_fail:
            op = self._start("Deleting", "Failed", None)
            return self._async_response(req, 202, None, req.path, op, location=True)
        del registry.scope_maps[name.lower()]
        return self._deleted(req)

    # ---- tokens ------------------------------------------------------------------------------------

    def _scope_map_from_id(self, registry: Registry, scope_map_id: Any) -> str:
        if not isinstance(scope_map_id, str) or not scope_map_id:
            raise bad_request("InvalidScopeMapId", "scopeMapId is required.", "scopeMapId")
        match = _RESOURCE_ID.match(scope_map_id)
        if (
            match is None
            or match["kind"].lower() != "scopemaps"
            or not registry.in_scope(match["sub"], match["rg"])
            or match["registry"].lower() != registry.name.lower()
        ):
            raise bad_request(
                "InvalidScopeMapId",
                f"scopeMapId '{scope_map_id}' must be the id of a scope map in registry '{registry.name}'.",
                "scopeMapId",
            )
        key = match["name"].lower()
        if key not in registry.scope_maps:
            raise bad_request(
                "InvalidScopeMapId",
                f"The scope map '{match['name']}' does not exist in registry '{registry.name}'.",
                "scopeMapId",
            )
        return key

    @staticmethod
    def _status(value: Any) -> str:
        if value not in ("enabled", "disabled"):
            raise bad_request("InvalidTokenStatus", "status must be 'enabled' or 'disabled'.", "status")
        return value

    @staticmethod
    def _kept_slots(props: dict[str, Any]) -> set[str] | None:
        """The password slots a PUT/PATCH lists; None when it says nothing about passwords."""
        credentials = props.get("credentials")
        if not isinstance(credentials, dict) or "passwords" not in credentials:
            return None
        passwords = credentials["passwords"] or []
        if not isinstance(passwords, list):
            raise bad_request("InvalidRequestContent", "credentials.passwords must be a list.", "passwords")
        kept = set()
        for password in passwords:
            slot = password.get("name") if isinstance(password, dict) else None
            if slot not in names.PASSWORD_SLOTS:
                raise bad_request(
                    "InvalidPasswordName", "Password names must be 'password1' or 'password2'.", "passwords"
                )
            kept.add(slot)
        return kept

    @staticmethod
    def _keep_slots(token: Token, kept: set[str] | None) -> None:
        if kept is not None:
            token.passwords = {n: s for n, s in token.passwords.items() if n in kept}

    def _token_or_404(self, registry: Registry, name: str) -> Token:
        token = registry.tokens.get(name.lower())
        if token is None:
            raise not_found("tokens", name, f"registry '{registry.name}'")
        return token

    def list_tokens(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self._registry(sub, rg, reg)
        return self._page(req, registry.tokens, lambda t: self.token_json(registry, t))

    def get_token(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        token = self._token_or_404(registry, name)
        self._observe_resource(token)
        return Response(200, self.token_json(registry, token))

    def put_token(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        if not names.TOKEN_NAME.match(name):
            raise bad_request(
                "InvalidTokenName",
                "Token names must be 5-50 characters of letters, digits and '-'.",
                "tokenName",
            )
        props = self._properties(self._json(req))
        scope_map = self._scope_map_from_id(registry, props.get("scopeMapId"))
        status = self._status(props.get("status", "enabled"))
        kept = self._kept_slots(props)
        existing = registry.tokens.get(name.lower())
        target = ["token", registry.name.lower(), name.lower()]
        if existing is None and len(registry.tokens) >= SKU_LIMITS[registry.sku]:
            raise ArmError(
                409,
                "QuotaExceeded",
                f"The registry already has {len(registry.tokens)} tokens, the most its {registry.sku} SKU allows.",
                "tokenName",
            )
        if existing is not None:
            if req.lro_fail:
                op = self._start("Updating", "Failed", None)
                return self._async_response(req, 200, self.token_json(registry, existing), req.path, op)
            existing.scope_map, existing.status = scope_map, status
            self._keep_slots(existing, kept)
            op = self._start("Updating", "Succeeded", target)
            return self._async_response(req, 200, self.token_json(registry, existing), req.path, op)
        # A new token has no passwords: those come only from generateCredentials.
        token = Token(name=name, scope_map=scope_map, status=status, creation_date=format_time(utcnow()))
        registry.tokens[name.lower()] = token
        # As recorded from real ARM: 201, provisioningState Creating, then an Azure-AsyncOperation to poll.
        op = self._start("Creating", "Failed" if req.lro_fail else "Succeeded", target)
        return self._async_response(req, 201, self.token_json(registry, token), req.path, op)

    def patch_token(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        token = self._token_or_404(registry, name)
        props = self._properties(self._json(req))
        scope_map = self._scope_map_from_id(registry, props["scopeMapId"]) if "scopeMapId" in props else None
        status = self._status(props["status"]) if "status" in props else None
        kept = self._kept_slots(props)
        if req.lro_fail:
            op = self._start("Updating", "Failed", None)
            return self._async_response(req, 200, self.token_json(registry, token), req.path, op)
        if scope_map is not None:
            token.scope_map = scope_map
        if status is not None:
            token.status = status
        self._keep_slots(token, kept)
        self.dirty = True
        return Response(200, self.token_json(registry, token))

    def delete_token(self, req: Request, sub: str, rg: str, reg: str, name: str) -> Response:
        registry = self._registry(sub, rg, reg)
        if name.lower() not in registry.tokens:
            return Response(204)
        if req.lro_fail:
            op = self._start("Deleting", "Failed", None)
            return self._async_response(req, 202, None, req.path, op, location=True)
        del registry.tokens[name.lower()]
        return self._deleted(req)

    def generate_credentials(self, req: Request, sub: str, rg: str, reg: str) -> Response:
        registry = self._registry(sub, rg, reg)
        body = self._json(req)
        token_id = body.get("tokenId")
        match = _RESOURCE_ID.match(token_id) if isinstance(token_id, str) else None
        if match is None or match["kind"].lower() != "tokens":
            raise bad_request("InvalidTokenId", "tokenId must be the resource id of a token.", "tokenId")
        token = registry.tokens.get(match["name"].lower())
        if (
            token is None
            or match["registry"].lower() != registry.name.lower()
            or not registry.in_scope(match["sub"], match["rg"])
        ):
            raise not_found("tokens", match["name"], f"registry '{registry.name}'")
        slot_name = body.get("name")
        if slot_name is not None and slot_name not in names.PASSWORD_SLOTS:
            raise bad_request("InvalidPasswordName", "name must be 'password1' or 'password2'.", "name")
        expiry = None
        if body.get("expiry") is not None:
            try:
                expiry = parse_time(body["expiry"])
            except ValueError as exc:
                raise bad_request("InvalidExpiry", "expiry must be an RFC 3339 date-time.", "expiry") from exc
        if req.lro_fail:
            op = self._start("InProgress", "Failed", None)
            return self._async_response(req, 202, None, req.path, op, location=True)
        generated = []
        for slot in [slot_name] if slot_name else names.PASSWORD_SLOTS:
            record, value = PasswordSlot.generate(slot, expiry)
            token.passwords[slot] = record
            generated.append(
                {"name": slot, "value": value, "creationTime": record.creation_time}
                | ({"expiry": record.expiry} if record.expiry else {})
            )
        self.dirty = True
        return Response(200, {"username": token.name, "passwords": generated})

    # ---- operations --------------------------------------------------------------------------------

    def get_operation(self, req: Request, op_id: str, location: str) -> Response:
        op = self.state.operations.get(op_id)
        if op is None:
            raise not_found("operations", op_id)
        self._observe(op)
        done = op.end_time is not None
        error = {"code": "InternalServerError", "message": "The operation failed (injected lro_fail fault)."}
        if location or op.kind == "location":
            if not done:
                return Response(202, None, {"Location": self._url(req, req.path), **self._retry_after()})
            if op.result == "Failed":
                raise ArmError(500, error["code"], error["message"])
            return Response(204)
        body: dict[str, Any] = {
            "id": req.path,
            "name": op.id,
            "status": op.result if done else op.pending_status,
            "startTime": op.start_time,
        }
        if done:
            body["endTime"] = op.end_time
            if op.result == "Failed":
                body["error"] = error
        return Response(200, body, {} if done else self._retry_after())
