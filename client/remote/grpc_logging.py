"""gRPC core's own stderr lines (``chttp2_transport.cc:... Got goaway``) kept out of the clients' output.

gRPC's C core logs through absl to stderr by itself, bypassing Python's logging: a cancelled or drained
session prints transport lines a user cannot act on, between the client's one-line messages. Its
verbosity is read from the environment when ``grpc`` is first imported, so the commands call this first.
"""

from __future__ import annotations

import os

VERBOSITY_VARIABLE = "GRPC_VERBOSITY"


def quiet_grpc_core(verbose: bool = False) -> None:
    """Silence gRPC core's stderr logging (``GRPC_VERBOSITY=NONE``) unless ``verbose`` or the user set it.

    Call before anything imports ``grpc``; the client's errors still come as its own one-line messages.
    """
    if not verbose:
        os.environ.setdefault(VERBOSITY_VARIABLE, "NONE")
