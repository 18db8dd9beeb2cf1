"""OTLP profiles export (``profiles/v1development``) over gRPC or HTTP/protobuf.

    exporter = profile_exporter()          # settings from the OTEL_EXPORTER_OTLP_* variables
    ok = exporter.export(request)          # an ExportProfilesServiceRequest; False on failure
    exporter.shutdown()

The OpenTelemetry SDK has no profiles exporter yet, so this one follows its exporters' rules
with the same variables: ``OTEL_EXPORTER_OTLP_PROFILES_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT,
INSECURE,CERTIFICATE,CLIENT_KEY,CLIENT_CERTIFICATE,COMPRESSION}``, each falling back to the
general ``OTEL_EXPORTER_OTLP_*`` one. Protocol ``grpc`` (the Python SDK's default) or
``http/protobuf``; gRPC's endpoint is ``host:port`` or a URL (``https`` means TLS, ``http``
plaintext unless ``INSECURE`` says otherwise), HTTP's signal URL is the profiles endpoint as
given, or the general endpoint plus ``/v1development/profiles``. The SDK's own resolution
helpers are private and changed signatures between the versions this package supports, so the
precedence is reimplemented here; the gRPC stub is opentelemetry-proto's.

:meth:`export` is called from the profiles thread only: it may block for up to the timeout
(one attempt, no retries: the next task's profile is the retry) and never raises.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2_grpc
from opentelemetry.util.re import parse_env_headers

_log = logging.getLogger("otel_memory")

PROFILES_PATH = "v1development/profiles"
"""The HTTP path of the profiles signal."""

_DEFAULT_GRPC = "http://localhost:4317"
_DEFAULT_HTTP = "http://localhost:4318"


class ProfileExporter(Protocol):
    """Sends one export request; never raises."""

    def export(self, request: Any) -> bool: ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Where and how profiles are sent, resolved from the environment."""

    protocol: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    insecure: bool
    certificate: str | None
    client_key: str | None
    client_certificate: str | None
    gzip: bool


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_PROFILES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>`` (blank: unset)."""
    for variable in (f"OTEL_EXPORTER_OTLP_PROFILES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(variable, "").strip()
        if value:
            return value
    return None


def settings_from_env(environ: Mapping[str, str] | None = None) -> ExportSettings:
    """The profiles exporter's settings, as the SDK's exporters read theirs."""
    env = os.environ if environ is None else environ
    protocol = (_get(env, "PROTOCOL") or "grpc").lower()
    if protocol not in ("grpc", "http/protobuf"):
        _log.warning(
            "otel_memory: profiles protocol %r is not supported (grpc, http/protobuf): using grpc",
            protocol,
        )
        protocol = "grpc"
    own = env.get("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "").strip()
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if protocol == "grpc":
        endpoint = own or general or _DEFAULT_GRPC
    else:  # the signal variable is the URL as given; the general one is a base
        endpoint = own or f"{(general or _DEFAULT_HTTP).rstrip('/')}/{PROFILES_PATH}"
    try:  # seconds, as the Python SDK's exporters read it
        timeout = float(_get(env, "TIMEOUT") or 10)
    except ValueError:
        timeout = 10.0
    scheme = urlparse(endpoint).scheme
    insecure_text = _get(env, "INSECURE")
    if scheme == "https":
        insecure = False
    elif insecure_text is not None:
        insecure = insecure_text.lower() == "true"
    else:
        insecure = scheme == "http" or protocol == "http/protobuf"
    return ExportSettings(
        protocol=protocol,
        endpoint=endpoint,
        headers=tuple(parse_env_headers(_get(env, "HEADERS") or "", liberal=True).items()),
        timeout=timeout,
        insecure=insecure,
        certificate=_get(env, "CERTIFICATE"),
        client_key=_get(env, "CLIENT_KEY"),
        client_certificate=_get(env, "CLIENT_CERTIFICATE"),
        gzip=(_get(env, "COMPRESSION") or "").lower() == "gzip",
    )


def profile_exporter(settings: ExportSettings | None = None) -> ProfileExporter:
    """The exporter for ``settings`` (default: from the environment)."""
    resolved = settings or settings_from_env()
    if resolved.protocol == "grpc":
        return GrpcProfileExporter(resolved)
    return HttpProfileExporter(resolved)


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


class GrpcProfileExporter:
    """``ProfilesService/Export`` over one gRPC channel."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        parsed = urlparse(settings.endpoint)
        target = parsed.netloc if parsed.netloc else settings.endpoint
        compression = grpc.Compression.Gzip if settings.gzip else None
        if settings.insecure:
            self._channel = grpc.insecure_channel(target, compression=compression)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.certificate),
                private_key=_read(settings.client_key),
                certificate_chain=_read(settings.client_certificate),
            )
            self._channel = grpc.secure_channel(target, credentials, compression=compression)
        self._stub = profiles_service_pb2_grpc.ProfilesServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )

    def export(self, request: Any) -> bool:
        """One attempt within the timeout; False (logged at debug) when it fails."""
        try:
            self._stub.Export(
                request, metadata=self.settings.headers or None, timeout=self.settings.timeout
            )
        except grpc.RpcError as exc:
            _log.debug("otel_memory: profile export to %s failed: %s", self.settings.endpoint, exc)
            return False
        return True

    def shutdown(self) -> None:
        """Close the channel."""
        self._channel.close()


class HttpProfileExporter:
    """``POST`` of the protobuf request to the profiles URL (``urllib``: one request per task
    profile needs no session)."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self._headers = {**dict(settings.headers), "Content-Type": "application/x-protobuf"}
        if settings.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._context: ssl.SSLContext | None = None
        if urlparse(settings.endpoint).scheme == "https":
            self._context = ssl.create_default_context(cafile=settings.certificate)
            if settings.client_certificate:
                self._context.load_cert_chain(settings.client_certificate, settings.client_key)

    def export(self, request: Any) -> bool:
        """One attempt within the timeout; False (logged at debug) when it fails."""
        body = request.SerializeToString()
        if self.settings.gzip:
            body = gzip.compress(body)
        post = urllib.request.Request(
            self.settings.endpoint, data=body, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(  # the configured OTLP endpoint
                post, timeout=self.settings.timeout, context=self._context
            ) as response:
                response.read()
                return 200 <= int(response.status) < 300
        except (OSError, ValueError, http.client.HTTPException) as exc:  # HTTPError too
            _log.debug("otel_memory: profile export to %s failed: %s", self.settings.endpoint, exc)
            return False

    def shutdown(self) -> None:
        """Nothing is kept open between exports."""
