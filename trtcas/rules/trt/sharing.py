"""What ``explain`` says about tensor-parallel ranks sharing one engine build.

Engine actions are named ``engine[rankN]`` by the planners; ranks whose networks are
structurally identical (and whose engines do not embed weights) have equal keys, so one
build serves them all. For rank N > 0 this says whether it shared with rank 0 and, if not,
which key component differs.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from trtcas.graph.explain import diff_components

_RANK = re.compile(r"^(?P<stem>.+)\[rank(?P<rank>\d+)(?P<rest>(,[^\]]*)?)\]$")


def rank_sharing_lines(action_id: str, records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """For ``X[rankN]`` (N > 0): whether it shared its key with ``X[rank0]``, and if not, why."""
    match = _RANK.match(action_id)
    if not match or match["rank"] == "0":
        return []
    first_id = f"{match['stem']}[rank0{match['rest'] or ''}]"
    mine, first = records.get(action_id), records.get(first_id)
    if not first or not mine or not mine.get("key_components") or not first.get("key_components"):
        return []
    if mine["key"] == first["key"]:
        return [f"same key as {first_id}: one build serves both (the rank lives only in the weights)"]
    differences = diff_components(first["key_components"], mine["key_components"], verb="differs")
    return [f"does not share with {first_id}: {line}" for line in differences]
