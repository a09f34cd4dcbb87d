"""A cache directory as one object: blob store, action cache, pins, counters.

The hash algorithm is a property of the store, fixed when it is created and recorded in
``<cache>/store.json``, so a later process cannot mix blake3 and sha256 keys in one place.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.counters import Counters
from trtcas.cas.digest import DEFAULT_ALGO, check_algo
from trtcas.cas.layout import LAYOUT_VERSION, CacheLayout
from trtcas.cas.pins import Pins
from trtcas.cas.settings import CacheSettings, load_settings, save_settings
from trtcas.cas.statcache import StatCache
from trtcas.errors import TrtcasError

if TYPE_CHECKING:
    from trtcas.cas.actioncache import ActionCache
    from trtcas.cas.blobstore import BlobStore

STORE_FILE = "store.json"


def default_cache_dir() -> Path:
    """``$TRTCAS_CACHE_DIR``, else ``~/.cache/trtcas``."""
    env = os.environ.get("TRTCAS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trtcas"


class ContentStore:
    """Everything stored in one cache directory."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, algo: str | None = None):
        self.root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).absolute()
        self.layout = CacheLayout(self.root)
        self.algo = self._settle_algo(algo)
        self.statcache = StatCache(self.layout.statcache_db)
        self.counters = Counters(self.layout.counters_db)
        self.pins = Pins(self.layout.pins_root)
        self._lock = threading.Lock()
        self._blobs: BlobStore | None = None
        self._actions: ActionCache | None = None

    # The blob store and the action cache are made when first used: a no-op build answered
    # from its stamp uses neither, and importing them (zstandard, msgpack, the blob code)
    # was ~13 ms of its ~0.1 s.
    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            with self._lock:
                if self._blobs is None:
                    from trtcas.cas.blobstore import BlobStore

                    self._blobs = BlobStore(self.root, self.algo, statcache=self.statcache)
        return self._blobs

    @property
    def actions(self) -> ActionCache:
        if self._actions is None:
            blobs = self.blobs
            with self._lock:
                if self._actions is None:
                    from trtcas.cas.actioncache import ActionCache

                    self._actions = ActionCache(blobs, self.counters)
        return self._actions

    @property
    def settings(self) -> CacheSettings:
        """This cache's persisted settings (``<cache>/config.json``), read afresh each time so
        a long build sees a cap that another process just set."""
        return load_settings(self.layout.settings_file)

    def save_settings(self, settings: CacheSettings) -> None:
        save_settings(self.layout.settings_file, settings)

    def _settle_algo(self, requested: str | None) -> str:
        marker = self.layout.store_file
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from trtcas.oserrors import describe_os_error

            raise TrtcasError(f"cannot create cache dir {self.root}: {describe_os_error(exc)}") from exc
        try:
            recorded = json.loads(marker.read_text())["algo"] if marker.exists() else None
        except PermissionError as exc:
            raise TrtcasError(f"cache dir {self.root} is not writable; pass --cache-dir or set TRTCAS_CACHE_DIR") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:  # TypeError: not a JSON object
            raise TrtcasError(f"cache dir {self.root}: unreadable {STORE_FILE} ({exc}); fix or remove it") from exc
        if recorded is not None:
            if requested and requested != recorded:
                raise TrtcasError(f"cache dir {self.root} uses {recorded}, not {requested}; use another --cache-dir")
            return check_algo(recorded)
        algo = check_algo(requested or DEFAULT_ALGO)
        if not os.access(self.root, os.W_OK):
            raise TrtcasError(f"cache dir {self.root} is not writable; pass --cache-dir or set TRTCAS_CACHE_DIR")
        atomic_write_bytes(marker, json.dumps({"algo": algo, "layout": LAYOUT_VERSION}).encode())
        return algo
