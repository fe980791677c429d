"""Put this file next to LiteLLM's config.yaml; the config names `aidash_callbacks.handler`."""

from aidash_lib.gateway_logger import handler as handler
