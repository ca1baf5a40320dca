"""The platform fixtures (`platform`, `sessions`, `merchant`, `api`...) live in tests/conftest.py.

They moved there so tests/browser shares the one session-scoped platform; edit them there. The
helpers below are re-exported for the tests that import them from here.
"""

from tests.conftest import MerchantKeys, OperatorLogin, _fresh_database

__all__ = ["MerchantKeys", "OperatorLogin", "_fresh_database"]
