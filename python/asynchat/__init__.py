"""``import asynchat`` on Python 3.12+ (where the stdlib module is gone): asyncore-rs."""

import sys

from asyncore_rs import asynchat as _asynchat

sys.modules[__name__] = _asynchat
