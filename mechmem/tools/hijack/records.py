"""CounterFact-format records (Meng et al. 2022, the ROME release), read with line-numbered errors.

One JSON object per line, either in ROME's layout::

    {"case_id": 0, "requested_rewrite": {"prompt": "{} is located in the city of", "subject": "Eiffel Tower",
     "relation_id": "P131", "target_true": {"str": "Paris", "id": "Q90"},
     "target_new": {"str": "Chicago", "id": "Q1297"}}}

or flat (the same fields at the top level; targets may be plain strings; ``target_false`` is
accepted for ``target_new``). The prompt template holds ``{}`` where the subject goes. A bad
record raises ``ValueError`` naming the file, the line and the field; nothing is skipped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CounterFactRecord:
    """One fact: ``prompt`` (template with ``{}``) filled with ``subject`` should continue with ``target_true``."""

    line: int
    case_id: object
    subject: str
    prompt: str
    relation_id: str
    target_true: str
    target_false: str

    @property
    def text(self) -> str:
        """The factual prompt, e.g. "The Eiffel Tower is in the city of"."""
        return self.prompt.replace("{}", self.subject)


def _target(value, field: str, where: str) -> str:
    if isinstance(value, dict):
        if "str" not in value:
            raise ValueError(f"{where}: field {field!r} has no 'str' entry")
        value = value["str"]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string (or {{'str': ...}}), got {value!r}")
    return value.strip()


def parse_record(obj, line: int, source: str = "<records>") -> CounterFactRecord:
    """Validate one decoded JSON object (see the module docstring for the accepted layouts)."""
    where = f"{source}: line {line}"
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    body = obj.get("requested_rewrite", obj)
    prefix = "requested_rewrite." if "requested_rewrite" in obj else ""
    if not isinstance(body, dict):
        raise ValueError(f"{where}: field 'requested_rewrite' must be an object")
    if "target_new" not in body and "target_false" in body:
        body = {**body, "target_new": body["target_false"]}
    for field in ("subject", "prompt", "relation_id", "target_true", "target_new"):
        if field not in body:
            raise ValueError(f"{where}: missing field {prefix + field!r}")
    for field in ("subject", "prompt", "relation_id"):
        if not isinstance(body[field], str) or not body[field].strip():
            raise ValueError(f"{where}: field {prefix + field!r} must be a non-empty string, got {body[field]!r}")
    if "{}" not in body["prompt"]:
        raise ValueError(f"{where}: field {prefix + 'prompt'!r} must contain '{{}}' where the subject goes")
    true = _target(body["target_true"], prefix + "target_true", where)
    false = _target(body["target_new"], prefix + "target_new", where)
    if true == false:
        raise ValueError(f"{where}: target_true and target_new are both {true!r}")
    return CounterFactRecord(
        line,
        obj.get("case_id", line),
        body["subject"].strip(),
        body["prompt"].strip(),
        body["relation_id"].strip(),
        true,
        false,
    )


def load_records(path: str | Path, limit: int | None = None) -> list[CounterFactRecord]:
    """Read a JSON-lines record file (blank lines ignored); the first bad line raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file {path} does not exist")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
            records.append(parse_record(obj, number, str(path)))
            if limit is not None and len(records) >= limit:
                break
    if not records:
        raise ValueError(f"{path}: no records")
    return records
