"""The process-wide blob store, chosen by environment (filesystem under $HARTONOMOUS_HOME, or S3)."""
from __future__ import annotations

import functools
import os

from django.conf import settings

from .blobstore import BlobStore, blobstore_from_env


@functools.cache
def blobstore() -> BlobStore:
    return blobstore_from_env(os.environ, settings.HOME)
