"""The last step: tell the service (``POST /v1/admin/indexes/{name}/reload``) which version to load."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

from vqrec.index.errors import RebuildError

from .codes import EXIT_NOTIFY
from .config import RebuildConfig

logger = logging.getLogger(__name__)


def notify(cfg: RebuildConfig, version: str, *, busy_for: float = 60.0, first_wait: float = 0.5) -> str:
    """POST the reload of ``version``. A 409 (a reload of the name is running: another admin, or the
    service's alias poller already loading this very version) is retried with backoff for ``busy_for``
    seconds; any other failure, or a 409 for longer, is EXIT_NOTIFY."""
    url = f"{cfg.notify_url.rstrip('/')}/v1/admin/indexes/{cfg.name}/reload"  # type: ignore[union-attr]
    key = os.environ.get(cfg.admin_key_env)
    deadline = time.monotonic() + busy_for
    wait = first_wait
    while True:
        req = urllib.request.Request(
            url,
            data=json.dumps({"version": version}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return f"{url}: HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            body = e.read()[:300].decode("utf-8", "replace")
            if e.code == 409 and time.monotonic() + wait < deadline:
                logger.info("notify: %s answered 409 (a reload is running); again in %.1f s", url, wait)
                time.sleep(wait)
                wait = min(2 * wait, 5.0)
                continue
            raise RebuildError(f"notify failed: {url}: HTTP {e.code} {body}", EXIT_NOTIFY) from None
        except (urllib.error.URLError, OSError) as e:
            raise RebuildError(f"notify failed: {url}: {e}", EXIT_NOTIFY) from None
