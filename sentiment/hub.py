"""The Hugging Face Hub, asked once and briefly: is it reachable, and what is already cached.

Without internet, `from_pretrained("org/name")` and `datasets.load_dataset("imdb")` retry for
a minute or more, with pages of logging, before they fail. Here the Hub is probed once per
process with a short timeout; a Hub id already in the local cache then loads from its cached
folder with no network at all, and one that is not cached is a one-line error naming what works
offline.

    python -c "from sentiment import hub; print(hub.unreachable() or 'the Hub answers')"
"""

from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request

from sentiment.config import BASELINES
from sentiment.errors import UserError

PROBE_TIMEOUT_S = 3.0
OFFLINE_MODELS = (
    "--model offline-minilm, a local model folder with config.json, or an MLflow model URI (models:/NAME@champion)"
)
_TRUE = ("1", "on", "yes", "true")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_mode() -> bool:
    """The user asked for no network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(name, "").lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.cache
def unreachable() -> str | None:
    """Why the Hub cannot be used from here (None when it answers); probed once per process."""
    if offline_mode():
        return "HF_HUB_OFFLINE is set"
    request = urllib.request.Request(f"{endpoint()}/api/models?limit=1", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (rate limit, auth): let the real call report the details
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return " ".join(str(reason).split())[:120] or type(exc).__name__


def cached_model(repo_id: str) -> str | None:
    """The local folder of a Hub model already in the Hugging Face cache, else None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, a partial cache, a malformed id: all mean "not here"
        return None


def is_hub_id(name: str) -> bool:
    """``name`` or ``org/name`` that is not a local path, an alias, a baseline or an MLflow URI."""
    if (
        name == "offline-minilm"
        or name in BASELINES
        or ":/" in name
        or name.startswith(("/", ".", "~"))
        or name.count("/") > 1
    ):
        return False
    return not os.path.exists(os.path.expanduser(name))


def resolve_model(repo_id: str) -> str:
    """A Hub id as `from_pretrained` should get it: the id when the Hub answers, its cached
    folder when it does not.

    Raises:
        UserError: the Hub is unreachable and the model is not cached.
    """
    reason = unreachable()
    if reason is None:
        return repo_id
    folder = cached_model(repo_id)
    if folder:
        return folder
    raise UserError(
        f"model {repo_id!r} is not in the local Hugging Face cache and the Hub ({endpoint()}) is not reachable "
        f"({reason}); without internet use {OFFLINE_MODELS}"
    )


def go_offline_if_unreachable() -> str | None:
    """When the Hub is unreachable, tell huggingface_hub and datasets so (HF_HUB_OFFLINE, and
    their constants when already imported): a cached dataset then loads at once and an
    uncached one fails at once, not after a minute of retries. Returns the reason, or None."""
    reason = unreachable()
    if reason is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        for module, attribute in (
            ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
            ("datasets.config", "HF_HUB_OFFLINE"),
        ):
            if module in sys.modules:
                setattr(sys.modules[module], attribute, True)
    return reason
