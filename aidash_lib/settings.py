"""The dashboard settings (`config/dashboard.yaml`): where things are, intervals, thresholds.

Validated with pydantic; every problem is reported as `file:line: field: message`.
Environment variables override the file, so that one install can be pointed elsewhere:
`AIDASH_CONFIG`, `AIDASH_GATEWAY_URL`, `AIDASH_GATEWAY_KEY` (else `LITELLM_MASTER_KEY`, or the
variable named by `gateway.key_env`), `AIDASH_PROMETHEUS_URL`, `AIDASH_ALERTMANAGER_URL`,
`AIDASH_STORE`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from aidash_lib.yamlfile import Problem, UnusableInput, load_yaml, plain, validation_problems

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "dashboard.yaml"
DEFAULT_STORE = "~/.local/share/aidash/history.sqlite"


def _check_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Strict):
    """The LiteLLM proxy. The key is read from the environment, never stored in the file."""

    url: str = "http://127.0.0.1:4000"
    key_env: str = "LITELLM_MASTER_KEY"
    key: SecretStr | None = Field(default=None, repr=False)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    health_check_min_interval_s: float = Field(default=60.0, ge=0)

    _url_is_http = field_validator("url")(_check_url)


class ServerSettings(_Strict):
    """An optional server (Prometheus, Alertmanager): unset `url` means not used."""

    url: str | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    _url_is_http = field_validator("url")(_check_url)


class StoreSettings(_Strict):
    path: str = DEFAULT_STORE
    raw_retention_h: float = Field(default=48.0, gt=0)
    rollup_retention_d: float = Field(default=30.0, gt=0)


class Intervals(_Strict):
    """How often the recorder polls each source, in seconds."""

    machine_s: float = Field(default=5.0, gt=0)
    gpu_s: float = Field(default=2.0, gt=0)
    gateway_readiness_s: float = Field(default=10.0, gt=0)
    gateway_metrics_s: float = Field(default=15.0, gt=0)
    deployments_s: float = Field(default=300.0, gt=0)
    services_s: float = Field(default=30.0, gt=0)


class Threshold(_Strict):
    """A value turns `warn`, then `critical`, as it rises past these."""

    warn: float
    critical: float

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.critical < self.warn:
            raise ValueError(f"critical ({self.critical}) is below warn ({self.warn})")
        return self


def _default_thresholds() -> dict[str, Threshold]:
    return {
        "cpu_percent": Threshold(warn=85, critical=95),
        "memory_percent": Threshold(warn=85, critical=95),
        "disk_percent": Threshold(warn=85, critical=95),
        "gpu_utilization_percent": Threshold(warn=90, critical=98),
        "gpu_memory_percent": Threshold(warn=90, critical=97),
        "gpu_temperature_c": Threshold(warn=80, critical=90),
        "error_rate_percent": Threshold(warn=2, critical=10),
        "p95_latency_s": Threshold(warn=5, critical=15),
    }


class ServiceSettings(_Strict):
    """A service whose status is shown: a systemd unit, a Docker container, or a process."""

    name: str = Field(min_length=1)
    kind: Literal["systemd", "docker", "process"]
    target: str = Field(min_length=1)


class RoutingSettings(_Strict):
    """The files `aidash routes` reads by default; relative paths are relative to the folder of
    the settings file (the repository's `config/` when there is none)."""

    litellm_config: str = "litellm-config.yaml"
    providers: str = "providers.yaml"
    mappings: str = "model-mappings.yaml"


#: The dashboard's panels, by the name used in `dashboard.layout`.
PANEL_NAMES: tuple[str, ...] = (
    "status", "deployments", "traffic", "comparison", "requests", "routing", "gpus", "machine",
)


def _default_layout() -> list[str | list[str]]:
    return ["status", "deployments", "traffic", "comparison", "requests", "gpus", "machine"]


class DashboardSettings(_Strict):
    """What the Voila dashboard shows: its panels in rows (a name, or a list of names side by
    side), how often it refreshes from the store, its default range and its charts' size."""

    layout: list[str | list[str]] = Field(default_factory=_default_layout)
    refresh_s: float = Field(default=5.0, ge=0.5, le=3600)
    default_range: Literal["15m", "1h", "6h", "24h", "7d"] = "1h"
    chart_width_px: int = Field(default=420, ge=160, le=4000)
    chart_height_px: int = Field(default=220, ge=100, le=2000)
    #: Kernels `aidash serve` keeps that have already run the dashboard and follow the store
    #: (each ~300 MB and the CPU of an open page), so that a page opens without waiting for
    #: imports or a read; 0: none.
    preheated_kernels: int = Field(default=1, ge=0, le=8)

    @field_validator("layout")
    @classmethod
    def _known_panels(cls, layout: list[str | list[str]]) -> list[str | list[str]]:
        seen: list[str] = []
        for row in layout:
            names = [row] if isinstance(row, str) else row
            if not names:
                raise ValueError("a row of the layout names no panel")
            for name in names:
                if name not in PANEL_NAMES:
                    known = ", ".join(PANEL_NAMES)
                    raise ValueError(f"unknown panel {name!r}: choose from {known}")
                if name in seen:
                    raise ValueError(f"panel {name!r} appears twice in the layout")
                seen.append(name)
        return layout

    @property
    def panels(self) -> list[str]:
        """The panel names in the order they appear."""
        return [n for row in self.layout for n in ([row] if isinstance(row, str) else row)]


class Settings(_Strict):
    """Everything `config/dashboard.yaml` holds, after environment overrides."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    prometheus: ServerSettings = Field(default_factory=ServerSettings)
    alertmanager: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    intervals: Intervals = Field(default_factory=Intervals)
    thresholds: dict[str, Threshold] = Field(default_factory=_default_thresholds)
    services: list[ServiceSettings] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    source_path: str | None = Field(default=None, exclude=True)

    def gateway_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The gateway key: `AIDASH_GATEWAY_KEY`, else `gateway.key_env`'s variable, else file."""
        env = os.environ if environ is None else environ
        for name in ("AIDASH_GATEWAY_KEY", self.gateway.key_env):
            if env.get(name):
                return env[name]
        return self.gateway.key.get_secret_value() if self.gateway.key else None

    @property
    def store_path(self) -> Path:
        return Path(os.path.expanduser(self.store.path))


class SettingsError(Exception):
    """The settings file has problems; `problems` are located `file:line` messages."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    """`AIDASH_CONFIG`, else the repository's `config/dashboard.yaml`."""
    env = os.environ if environ is None else environ
    return Path(env["AIDASH_CONFIG"]) if env.get("AIDASH_CONFIG") else REPO_CONFIG


def validate_settings_file(path: str | Path) -> Settings:
    """Parse and validate a settings file as written (no environment overrides).

    Raises `UnusableInput` for a file that cannot be read or parsed, `SettingsError` for one
    that parses but is invalid.
    """
    doc = load_yaml(path)
    data = plain(doc.data)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError([_top_level_problem(doc.path)])
    try:
        return Settings.model_validate({**data, "source_path": str(path)})
    except ValidationError as exc:
        raise SettingsError(validation_problems(doc, exc)) from None


def _top_level_problem(path: str) -> Problem:
    return Problem(path, 1, "the settings file must be a mapping of sections (gateway:, ...)")


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings in force: the file (or defaults if the default file is absent) plus
    environment overrides."""
    env = os.environ if environ is None else environ
    chosen = Path(path) if path is not None else settings_path(env)
    if chosen.exists() or path is not None or env.get("AIDASH_CONFIG"):
        settings = validate_settings_file(chosen)
    else:
        settings = Settings()
    return apply_environment(settings, env)


def apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """The settings with `AIDASH_*` environment overrides applied (validated again)."""
    gateway = settings.gateway
    if environ.get("AIDASH_GATEWAY_URL"):
        gateway = gateway.model_copy(update={"url": environ["AIDASH_GATEWAY_URL"]})
    prometheus, alertmanager = settings.prometheus, settings.alertmanager
    if "AIDASH_PROMETHEUS_URL" in environ:
        prometheus = prometheus.model_copy(update={"url": environ["AIDASH_PROMETHEUS_URL"] or None})
    if "AIDASH_ALERTMANAGER_URL" in environ:
        url = environ["AIDASH_ALERTMANAGER_URL"] or None
        alertmanager = alertmanager.model_copy(update={"url": url})
    store = settings.store
    if environ.get("AIDASH_STORE"):
        store = store.model_copy(update={"path": environ["AIDASH_STORE"]})
    updated = settings.model_dump(exclude={"source_path"})
    updated.update(
        gateway=gateway.model_dump(), prometheus=prometheus.model_dump(),
        alertmanager=alertmanager.model_dump(), store=store.model_dump(),
    )
    try:
        result = Settings.model_validate({**updated, "source_path": settings.source_path})
    except ValidationError as exc:
        raise UnusableInput(_env_problem(exc)) from None
    return result


def _env_problem(exc: ValidationError) -> Problem:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"])
    return Problem("environment", None, f"{field}: {first['msg']} (from an AIDASH_* variable)")
