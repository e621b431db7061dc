"""``import asyncore`` on Python 3.12+ (where the stdlib module is gone): asyncore-rs."""

import sys

from asyncore_rs import asyncore as _asyncore

sys.modules[__name__] = _asyncore
