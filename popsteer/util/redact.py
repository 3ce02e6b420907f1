"""Keep credentials out of logged params and tags.

``redact(key, value)`` returns ``***`` for a key that looks secret (password, passwd,
secret, token, api_key, access_key, credential, auth) and otherwise the value with the
userinfo of every URI (``http://user:pass@host`` -> ``http://***@host``) and secret query
parameters (``?token=...``) masked.
"""

from __future__ import annotations

import re

MASK = "***"
CREDENTIALS_ENV = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
"""Where PopSteer's MLflow client gets credentials: the environment, read by MLflow itself, never a file."""
_SECRET_WORDS = r"password|passwd|secret|credentials?|api[_-]?key|access[_-]?key"
_SECRET_KEY = re.compile(rf"({_SECRET_WORDS})|(^|[^a-z])(token|auth|authorization|pwd)($|[^a-z])", re.IGNORECASE)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s'\"]+@")
_QUERY = re.compile(rf"([?&;](?:[^=&\s]*(?:{_SECRET_WORDS}|token|auth|pwd)[^=&\s]*)=)[^&\s'\"]+", re.IGNORECASE)


def secret_key(key: str) -> bool:
    """Whether a (dotted) key names a credential."""
    return bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    """``text`` with URI userinfo and secret query parameters masked."""
    return _QUERY.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1{MASK}@", text))


def redact(key: str, value: str) -> str:
    """The value to log for ``key``."""
    if secret_key(key) and value not in ("", "None"):
        return MASK
    return redact_text(value)


def redact_all(values: dict[str, str]) -> dict[str, str]:
    return {k: redact(k, str(v)) for k, v in values.items()}
