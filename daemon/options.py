"""The daemon's options: what ``mpd-daemon``'s flags set, validated once before anything starts.

``DaemonOptions`` holds the values as given (from the command line, or from Python). ``load`` checks
every one of them and resolves what the server then uses (the listen addresses, the token check, the
metrics address, the socket group), as uvicorn's ``Config.load`` does: the server takes loaded options
and validates nothing again. A refusal is a ``StartupError`` whose message says what to change.
"""

from __future__ import annotations

import grp
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core import available_models
from ..settings import PRECISIONS
from .auth import Authenticator, read_tokens_file
from .errors import DeviceUnavailableError, StartupError
from .limits import Limits
from .listen import ListenAddress, parse_listen
from .scheduler import DEFAULT_ANTICIPATION

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_SOCKET_MODE = 0o660  # unix sockets: the daemon's user and group only
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_BATCH_PIXELS = 16 * 1920 * 1088
DEFAULT_DRAIN_TIMEOUT = 30.0
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class DaemonOptions:
    """Everything ``mpd-daemon``'s flags set; ``load()`` validates them and resolves what the server uses.

    ``token`` is the shared secret itself, ``token_from`` where it came from (for messages: ``--token``,
    ``$MPD_TOKEN``); ``token_file`` a file holding it instead. ``auto_memory_budget``: the budget in
    ``limits`` is to be sized once the models are loaded (``mpd-daemon --memory-budget auto``).
    """

    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    device: str = "auto"
    models: list[str] = field(default_factory=lambda: ["rife"])
    weights_dir: Path | None = None
    precisions: list[str] = field(default_factory=lambda: ["auto"])  # each model's first one is its default
    threads: int | None = None
    limits: Limits = field(default_factory=Limits)
    auto_memory_budget: bool = False
    max_batch: int = DEFAULT_MAX_BATCH
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS
    batch_window: float = 0.0
    fair_wait: float = DEFAULT_ANTICIPATION
    token: str | None = None
    token_from: str = "the token"
    token_file: Path | None = None
    tokens_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    metrics_listen: str | None = None
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: str | None = None  # a group name or number for the unix sockets

    def __post_init__(self) -> None:
        self.loaded = False
        self.listeners: list[ListenAddress] = []
        self.authenticator = Authenticator()
        self.metrics_address: tuple[str, int] | None = None
        self.socket_gid: int | None = None

    def load(self, warn: bool = True) -> DaemonOptions:
        """Validate every option and resolve the listeners, tokens, metrics address and socket group; returns self.

        Raises StartupError naming the first problem (DeviceUnavailableError for an explicit device that is not
        there). With ``warn``, says what is allowed but unsafe (no TLS beyond loopback, metrics on the network).
        """
        self._check_engine()
        self._check_batching()
        self.listeners = [parse_listen(a) for a in self.listen]
        if not self.listeners:
            raise StartupError("no listen address")
        self.authenticator = Authenticator(self._shared_token(), self._user_tokens())
        if bool(self.tls_cert) != bool(self.tls_key):
            raise StartupError("TLS needs both --tls-cert and --tls-key")
        exposed = [a for a in self.listeners if not a.is_loopback]
        if exposed and not self.authenticator.required:
            raise StartupError(f"{exposed[0].grpc_target()} is reachable from other machines; a token is required "
                               "there (--token-file, --token or --tokens), with TLS (--tls-cert/--tls-key)")
        if exposed and not self.tls_cert and warn:
            log.warning("listening on %s without TLS: tokens and frames cross the network in clear",
                        ", ".join(a.grpc_target() for a in exposed))
        if not 0 <= self.socket_mode <= 0o777:
            raise StartupError(f"--socket-mode must be an octal mode such as 660, got {self.socket_mode:o}")
        self.socket_gid = None if self.socket_group is None else socket_group_id(self.socket_group)
        self.metrics_address = None
        if self.metrics_listen:
            host, port = self.metrics_address = metrics_address(self.metrics_listen)
            if not ListenAddress(host=host, port=port).is_loopback and warn:
                log.warning("metrics on %s:%d are reachable from other machines without a token (user names, "
                            "session counts, load): bind them to 127.0.0.1 or firewall the port", host, port)
        if not self.drain_timeout >= 0:
            raise StartupError(f"--drain-timeout must be 0 or positive, got {self.drain_timeout:g}")
        self.loaded = True
        return self

    def _check_engine(self) -> None:
        """The models, precisions, device and threads."""
        if not self.models:
            raise StartupError("--models names no model")
        unknown = [m for m in self.models if m not in available_models()]
        if unknown:
            raise StartupError(f"unknown model {unknown[0]!r}; available: {', '.join(available_models())}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise StartupError(f"--precision takes {', '.join(PRECISIONS)} (comma-separated), "
                               f"got {','.join(self.precisions)!r}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise StartupError(f"--device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        check_device(self.device)
        if self.threads is not None and self.threads < 1:
            raise StartupError(f"--threads must be at least 1, got {self.threads}")

    def _check_batching(self) -> None:
        if self.max_batch < 1 or self.max_batch_pixels < 1:
            raise StartupError(f"--max-batch and --max-batch-pixels must be at least 1, got {self.max_batch} and "
                               f"{self.max_batch_pixels}")
        if not (self.fair_wait >= 0 and self.batch_window >= 0):
            raise StartupError("--fair-wait-ms and --batch-window-ms must be 0 or positive")

    def _shared_token(self) -> str | None:
        """The shared secret (the token itself, or the token file's); an empty one is an error, never "no token"."""
        if self.token_file is not None:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise StartupError(f"cannot read token file {self.token_file}: {e.strerror}") from None
            if not token:
                raise StartupError(f"token file {self.token_file} is empty")
            return token
        if self.token is not None and not self.token.strip():
            if self.token_from.startswith("$"):
                raise StartupError(f"{self.token_from} is set but empty: give a secret, or unset it for no "
                                   "authentication")
            if self.token_from.startswith("--"):
                raise StartupError(f"{self.token_from} is empty: give a secret, or leave the flag out for no "
                                   "authentication")
            raise StartupError("the token is empty: give a secret (--token-file, --token, $MPD_TOKEN), or none at "
                               "all for no authentication")
        return self.token

    def _user_tokens(self) -> dict[str, str] | None:
        if self.tokens_file is None:
            return None
        user_tokens = read_tokens_file(self.tokens_file)
        if not user_tokens:
            raise StartupError(f"tokens file {self.tokens_file} names no user: add 'user token' lines")
        return user_tokens


def check_device(device: str) -> None:
    """Refuse an explicit CUDA device that this machine does not have (``auto`` falls back to the CPU instead)."""
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"--device {device}: no CUDA device is available here (torch "
                                     f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use "
                                     "--device cpu, or auto to take CUDA only when it is there")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                                     f"device(s), numbered from 0")


def socket_group_id(group: str) -> int:
    """The id of ``--socket-group`` (a name or a number); StartupError when there is no such group."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise StartupError(f"--socket-group: no group named {group!r}") from None


def metrics_address(text: str) -> tuple[str, int]:
    """``9108`` (loopback) or ``HOST:PORT``."""
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise StartupError(f"metrics address must be PORT or HOST:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise StartupError(f"metrics port out of range in {text!r}")
    return (host.strip("[]") if sep else "127.0.0.1"), number
