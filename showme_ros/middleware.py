"""Middleware settings under which large messages are delivered and memory stays flat.

rmw_fastrtps gives every reader and writer a history whose buffers grow to the largest message
it has carried and are never freed. A service with a deep request queue, answering 36 MiB frames
with 36 MiB images, then grows by tens of MiB per large request. The profile shipped next to this
module (``fastdds_profile.xml``) frees each buffer once its message is delivered. It must be in
the environment before ``rclpy.init``; a user's own Fast DDS configuration always wins. Clients
need it as much as the nodes: with rmw_fastrtps's default asynchronous publication, a client
sending 36 MiB requests on a loaded CPU lost one now and then (never delivered, not even late).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PROFILE = Path(__file__).with_name("fastdds_profile.xml")
# Fast DDS 3 reads the first; the second is the Fast DDS 2 spelling that older setups still use.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
# Without it rmw_fastrtps overrides the profile's history memory policy with its own default.
USE_XML_VARIABLE = "RMW_FASTRTPS_USE_QOS_FROM_XML"


def free_transport_buffers(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Point Fast DDS at the shipped profile unless the user has configured it already.

    Call before ``rclpy.init``. Returns a warning to log when the user's configuration is kept.
    """
    shipped = {PROFILE_VARIABLES[0]: str(PROFILE), USE_XML_VARIABLE: "1"}
    configured = [name for name in (*PROFILE_VARIABLES, USE_XML_VARIABLE) if name in environ]
    if configured and {name: environ[name] for name in configured} == shipped:
        return None  # applied already, by the process that started this one
    if configured:
        return (
            f"Fast DDS is configured by the environment ({', '.join(configured)}), so "
            f"{PROFILE.name} is not applied: unless that configuration sets historyMemoryPolicy "
            "to DYNAMIC, memory grows with the largest messages carried"
        )
    environ.update(shipped)
    return None
