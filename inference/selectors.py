"""Reads of the inference app."""
from __future__ import annotations

from django.db.models import QuerySet, Sum

from atoms.models import Atom

from .models import Model


def model_by_ref(ref) -> Model | None:
    """A model by id (an int or a digit string) or else by name (the newest of that name)."""
    qs = Model.objects.select_related("root", "tokenizer")
    text = str(ref).strip()
    model = qs.filter(pk=int(text)).first() if text.isdigit() and 0 < int(text) < 2**63 else None
    if model is None and text:
        model = qs.filter(name=text).order_by("-created_at", "-id").first()
    return model


def models_list() -> QuerySet[Model]:
    return Model.objects.select_related("root", "tokenizer").order_by("-created_at", "-id")


def model_atom_ids(*, model: Model) -> set[int]:
    ids = {i for chunks in model.tensors.values_list("chunks", flat=True) for i in chunks}
    ids.add(model.root_id)
    if model.tokenizer_id:
        ids.add(model.tokenizer_id)
    return ids


def model_unique_bytes(*, model: Model) -> int:
    """Bytes of the distinct atoms the model refers to (what it occupies in the store, shared or not)."""
    return Atom.objects.filter(pk__in=model_atom_ids(model=model)).aggregate(n=Sum("size"))["n"] or 0


def models_unique_bytes(*, models: list[Model]) -> int:
    """Bytes of the distinct atoms referred to by any of `models` (shared tensors counted once)."""
    ids: set[int] = set()
    for m in models:
        ids |= model_atom_ids(model=m)
    return Atom.objects.filter(pk__in=ids).aggregate(n=Sum("size"))["n"] or 0
