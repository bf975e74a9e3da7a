"""The few Kubernetes API calls the operator makes itself, over aiohttp with kopf's credentials.

kopf has no public API client; its users bring one. The operator needs four calls (read and patch
a Deployment's ``scale``, patch its own status, read a Secret key), so instead of another client
library it reuses aiohttp (already a kopf dependency) and the :class:`kopf.ConnectionInfo` that the
operator's login handler hands to kopf: one source of credentials for both.
Events go through :func:`kopf.event`, which posts them with kopf's own client.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

GROUP, VERSION, PLURAL = "coupons.example.com", "v1", "consumerautoscalers"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class KubeError(Exception):
    """The Kubernetes API refused a request (status and message from the server)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Scale:
    """A Deployment's ``scale`` subresource: what is asked and what runs."""

    replicas: int  # spec.replicas
    running: int | None  # status.replicas (pods that exist), None if not reported yet


class KubeClient:
    """A tiny Kubernetes API client bound to one set of credentials."""

    def __init__(self, info: kopf.ConnectionInfo, timeout_s: float = 10.0) -> None:
        self.info = info
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        self._session = aiohttp.ClientSession(
            base_url=info.server.rstrip("/") + "/",
            headers=headers,
            auth=auth,
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def close(self) -> None:
        await self._session.close()

    async def get_scale(self, namespace: str, deployment: str) -> Scale:
        """The Deployment's desired and existing replicas."""
        body = await self._request("GET", _scale_path(namespace, deployment))
        return Scale(
            int(body.get("spec", {}).get("replicas", 0)),
            body.get("status", {}).get("replicas"),
        )

    async def set_replicas(self, namespace: str, deployment: str, replicas: int) -> None:
        """Patch the ``scale`` subresource: the one permission the operator needs on it."""
        await self._request(
            "PATCH", _scale_path(namespace, deployment), {"spec": {"replicas": replicas}}
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into the ConsumerAutoscaler's status subresource."""
        path = f"apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        await self._request("PATCH", path, {"status": dict(status)})

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded (for ``kafka.bootstrapSecretRef``)."""
        body = await self._request("GET", f"api/v1/namespaces/{namespace}/secrets/{name}")
        data = body.get("data", {})
        if key not in data:
            raise KubeError(404, f"secret {name!r} has no key {key!r}")
        return base64.b64decode(data[key]).decode().strip()

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = MERGE_PATCH if method == "PATCH" else None
        try:
            async with self._session.request(method, path, json=body, headers=headers) as resp:
                payload: Any = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = payload.get("message", "") if isinstance(payload, dict) else ""
                    raise KubeError(resp.status, message or resp.reason or "error")
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc


def _scale_path(namespace: str, deployment: str) -> str:
    return f"apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale"


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """TLS as kopf would set it up: the cluster CA, an optional client certificate."""
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    if info.ca_data is not None:
        ca = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        context = ssl.create_default_context(cadata=ca)
    else:
        context = ssl.create_default_context(cafile=info.ca_path)
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(info.certificate_path, info.private_key_path)
    return context
