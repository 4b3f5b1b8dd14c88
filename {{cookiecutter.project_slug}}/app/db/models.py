"""Every model module, imported so ``Base.metadata`` is complete (Alembic and the schema test read it).

Add a module here when it defines tables; its migration goes in app/db/migrations/versions/.
"""

from __future__ import annotations

from ..accounts import models as accounts
from ..messages import models as messages
from . import markers
from .base import Base

metadata = Base.metadata
__all__ = ["Base", "accounts", "markers", "messages", "metadata"]
