"""Column types Django does not ship: PostgreSQL's native `point` (2D projection, GiST-indexed)."""
from __future__ import annotations

from django.db import models


class PointField(models.Field):
    description = "A PostgreSQL point (x, y)"

    def db_type(self, connection) -> str:
        return "point"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, tuple):
            return value
        x, y = str(value).strip("()").split(",")
        return float(x), float(y)

    def to_python(self, value):
        if value is None or isinstance(value, tuple):
            return value
        if isinstance(value, (list,)):
            return float(value[0]), float(value[1])
        return self.from_db_value(value, None, None)

    def get_prep_value(self, value):
        if value is None:
            return None
        x, y = value
        return f"({float(x)},{float(y)})"
