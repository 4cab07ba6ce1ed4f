"""The base of the collector's typed results (the summary, the analysis, the warnings).

summary.json has a few keys that only some entries carry (``phases`` only in a phased study, ``from`` only on
a change that has a previous value, ``rises_after`` only on a T_max estimated from an lr curve): a
``Sparse`` model writes a field only when it was given, so the file keeps the shape it always had and its
schema says which keys may be absent.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

__all__ = ["Model", "Sparse"]


class Model(BaseModel):
    """Mutable (tests and the collector adjust a summary before rendering it) and tolerant of unknown keys
    when read back (a newer hpctune may add some)."""

    model_config = ConfigDict(populate_by_name=True)


class Sparse(Model):
    """A model whose optional fields are written only when they were set. ``renamed`` maps a field to its
    key in the file where the key is a Python keyword (``from``)."""

    renamed: ClassVar[dict[str, str]] = {}

    @model_serializer(mode="wrap")
    def _only_what_was_set(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            field = type(self).model_fields.get(key)
            if field is not None and not field.is_required() and key not in self.model_fields_set:
                continue
            out[self.renamed.get(key, key)] = value
        return out
