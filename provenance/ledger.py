"""Checking the tenant's hash chain, and Merkle inclusion proofs over its record digests (native/)."""
from __future__ import annotations

from dataclasses import dataclass

import native
from hartonomous.errors import NotFound

from .models import GENESIS, LedgerRecord
from .services import chain_digest


@dataclass
class Break:
    seq: int
    reason: str


def ledger_verify(*, batch: int = 5000) -> tuple[int, Break | None]:
    """Recompute the chain of the current schema: (records checked, first break or None)."""
    prev, expected, checked = GENESIS, 1, 0
    qs = LedgerRecord.objects.order_by("seq").values_list("seq", "payload", "prev_digest", "digest")
    for seq, payload, prev_digest, digest in qs.iterator(chunk_size=batch):
        if seq != expected:
            return checked, Break(expected, f"record {expected} is missing (next is {seq})")
        if prev_digest != prev:
            return checked, Break(seq, "prev_digest does not match the previous record's digest")
        if chain_digest(prev_digest, payload) != digest:
            return checked, Break(seq, "digest does not match the payload")
        prev, expected, checked = digest, expected + 1, checked + 1
    return checked, None


def _digests(upto: int | None = None) -> list[bytes]:
    qs = LedgerRecord.objects.order_by("seq")
    if upto is not None:
        qs = qs.filter(seq__lte=upto)
    return [bytes.fromhex(d) for d in qs.values_list("digest", flat=True)]


def ledger_merkle_root(*, upto: int | None = None) -> str:
    digests = _digests(upto)
    if not digests:
        raise NotFound("The ledger is empty.")
    return native.merkle_root(digests).hex()


def ledger_inclusion_proof(*, seq: int, upto: int | None = None) -> dict:
    """Proof that record `seq` is leaf seq-1 of the Merkle tree over records 1..upto (default: all)."""
    digests = _digests(upto)
    if not 1 <= seq <= len(digests):
        raise NotFound("No such ledger record.", details={"seq": seq, "size": len(digests)})
    proof = native.merkle_proof(digests, seq - 1)
    return {"seq": seq, "digest": digests[seq - 1].hex(), "size": len(digests),
            "root": native.merkle_root(digests).hex(),
            "proof": [[sibling.hex(), bool(is_left)] for sibling, is_left in proof]}


def inclusion_verify(proof: dict) -> bool:
    path = [(bytes.fromhex(h), bool(left)) for h, left in proof["proof"]]
    return bool(native.merkle_verify(bytes.fromhex(proof["digest"]), path, bytes.fromhex(proof["root"])))
