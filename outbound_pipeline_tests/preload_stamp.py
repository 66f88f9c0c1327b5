"""Imported by `preload_main` only: notes the process that imported it."""

import os

IMPORTED_BY = os.getpid()
