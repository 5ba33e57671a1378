"""Names of the runtime handlers manifests may bind tools and resources to.

The compiler checks manifests against these sets (GEN206); the server's dispatch tables must
implement exactly these names (a test holds the two together).
"""

from __future__ import annotations

import re

TOOL_HANDLERS: frozenset[str] = frozenset(
    {
        "native.list_integrations",
        "native.get_integration_status",
        "native.create_flow",
        "native.get_event_history",
        "native.get_usage_summary",
        "native.search_entities",
        "memory.retrieve_relevant_chunks",
        "memory.search_or_ask",
        "memory.update_memory",
    }
)

# A variable of a resource's URI template, as the runtime reads its value from a URI (and the
# typed client's readers take it as a parameter).
URI_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Each resource handler with the URI template variables it reads (none: a fixed `uri`).
RESOURCE_VARIABLES: dict[str, tuple[str, ...]] = {
    "resources.integrations": (),
    "resources.integration_status": ("connector",),
    "resources.usage": (),
    "resources.recent_events": (),
    "resources.memory_profile": ("user",),
    "resources.memory_log": ("user",),
}

RESOURCE_HANDLERS: frozenset[str] = frozenset(RESOURCE_VARIABLES)
