"""Imported first by the fork server of the stages' workers (outbound_pipeline.workers): the
program's main module, named in workers.MAIN_MODULE_VARIABLE, so that its imports are done once
instead of by every worker that runs it again.

Whatever that import raises is ignored. The fork server has no command line, so a module that
reads its own as it is imported fails here; the fork server must not fail with it (every later
stage of the program would), and each worker still runs the module with the program's command
line, as Python does without this preload."""

from __future__ import annotations

import contextlib
import importlib
import os

from outbound_pipeline.workers import MAIN_MODULE_VARIABLE

_main_module = os.environ.get(MAIN_MODULE_VARIABLE)
if _main_module:
    with contextlib.suppress(BaseException):  # the module's own failure: see above
        importlib.import_module(_main_module)
