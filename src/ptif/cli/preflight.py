"""What a command checks before any work: each store it uses opens and answers.

A setting or credential problem must stop a run before it claims, writes or lists anything,
never become an image's failure (DESIGN.md, "Worker guarantees"). So each store a command uses
is opened here first, and checked:

- a folder that must already be there (a source, which ptif never writes to; the queue that
  ``status`` and ``retry`` read) is not silently created: a mistyped path is an error;
- an S3 store needs credentials, and its bucket must answer one listing of the store's prefix
  (a ``ListObjectsV2`` of one key): a missing bucket, refused credentials or a missing
  permission is a configuration error (exit 2), a server that does not answer is exit 3.

Each error names the store and where its location came from (flag, variable or ptif.toml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptif.errors import ConfigError, PtifError
from ptif.stores import StoreError, open_store

if TYPE_CHECKING:
    from ptif.config import Settings
    from ptif.stores import Store

ROLES = ("source", "process", "images")


def open_checked(
    settings: Settings, roles: tuple[str, ...] = ROLES, *, existing: tuple[str, ...] = ("source",)
) -> dict[str, Store]:
    """The stores named by ``roles``, each opened and checked; those in ``existing`` must be
    there already (a folder is not made for them)."""
    return {role: _open(settings, role, must_exist=role in existing) for role in roles}


def _open(settings: Settings, role: str, *, must_exist: bool) -> Store:
    url = getattr(settings, role)
    try:
        store = open_store(
            url,
            endpoint_url=settings.endpoint_url,
            read_only=role == "source",  # the masters: only ever read
            create=not must_exist,
        )
        check = getattr(store, "check_access", None)
        if check is not None:
            check()
    except PtifError as error:
        text = str(error).removeprefix(f"{url.strip()}: ")
        message = f"the {role} store ({settings.origin(role)}): {text}"
        raise (ConfigError if isinstance(error, ConfigError) else StoreError)(message) from error
    return store


def check_conversion(settings: Settings) -> None:
    """The conversion settings this installation can honour (a compression libvips cannot
    write would otherwise fail every image)."""
    from ptif.convert.pyramid import check_writable

    try:
        check_writable(settings.conversion_profile().resolve({}))
    except ConfigError as error:
        where = settings.origins.get("recipe") or settings.origin("profile")
        raise ConfigError(f"{where}: {error}") from error
