"""Filesystem event hints from watchdog (inotify, or polling on network filesystems), and their liveness."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import FolderConfig
from .fs import filesystem_type, is_network_filesystem

# Our own reads (and anyone's) open and close files; those events say nothing about new content.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


class _HintHandler(FileSystemEventHandler):
    """Forwards the paths an event names; never raises (an exception would kill the observer thread)."""

    def __init__(self, sink: Callable[[str, str], None], log: logging.Logger) -> None:
        self._sink = sink
        self._log = log

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS or event.is_directory:
            return
        try:
            for path in (event.src_path, getattr(event, "dest_path", "")):
                if path:
                    self._sink(os.fsdecode(path), event.event_type)
        except Exception:  # noqa: BLE001 - the scan is the truth; a lost hint only delays a file
            self._log.exception("dropping a filesystem event hint")


def uses_polling(folder: FolderConfig) -> tuple[bool, str]:
    """Whether a folder is polled, and why (explicit setting, or the filesystem type)."""
    fstype = filesystem_type(folder.in_dir)
    if folder.poll is not None:
        return folder.poll, f"poll = {str(folder.poll).lower()} ({fstype or 'unknown'} filesystem)"
    if is_network_filesystem(fstype):
        return True, f"{fstype} is a network filesystem: inotify misses remote writers"
    return False, f"{fstype or 'unknown'} filesystem"


class FolderObservers:
    """The observers of all folders: one inotify observer, one polling observer per polled folder."""

    def __init__(self, folders: list[FolderConfig], sink: Callable[[str, str], None], log: logging.Logger) -> None:
        """``sink(path, event_type)`` gets every hint; event_type is watchdog's ("modified", "closed", ...)."""
        self._log = log
        self._handler = _HintHandler(sink, log)
        self._observers: list[tuple[BaseObserver, list[str]]] = []
        inotify = Observer()
        inotify_dirs: list[str] = []
        for folder in folders:
            polled, why = uses_polling(folder)
            path = str(folder.in_dir)
            if polled:
                observer = PollingObserver(timeout=folder.poll_interval)
                observer.schedule(self._handler, path, recursive=False)
                self._observers.append((observer, [path]))
                log.info("watching %s by polling every %.0f s (%s)", path, folder.poll_interval, why)
            else:
                inotify.schedule(self._handler, path, recursive=False)
                inotify_dirs.append(path)
                log.info("watching %s with inotify (%s)", path, why)
        if inotify_dirs:
            self._observers.append((inotify, inotify_dirs))

    def start(self) -> None:
        """Start every observer thread (raises OSError, e.g. when the inotify watch limit is reached)."""
        for observer, _ in self._observers:
            observer.start()

    def dead_reason(self) -> str | None:
        """Why event delivery has stopped (an observer or emitter thread ended), or None while all run."""
        for observer, paths in self._observers:
            if not observer.is_alive():
                return f"the observer of {', '.join(paths)} stopped"
            for emitter in list(observer.emitters):
                if not emitter.is_alive():
                    return f"the event source for {emitter.watch.path} stopped (folder deleted or unmounted?)"
        return None

    def stop(self) -> None:
        """Stop and join all observers."""
        # watchdog logs a spurious error when an inotify read races with its own shutdown
        logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
        for observer, _ in self._observers:
            observer.stop()
        for observer, _ in self._observers:
            if observer.is_alive():
                observer.join(timeout=5)
