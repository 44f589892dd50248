"""``LoadReport``: where every model tensor came from, what was skipped and why, what stayed at init."""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from vggt_mv.weights.mapping import Plan, Shape

#: skip reasons that are the documented plan (not a sign that the file does not fit the model)
_DOCUMENTED_SKIPS = ("collision", "ignored", "superseded", "head disabled", "mask head in checkpoint")
_BLOCK = re.compile(r"^aggregator\.((?:pose_)?(?:frame|global)_blocks)\.(\d+)\.")


def module_of(key: str) -> tuple[str, int | None]:
    """Group a state_dict key into a report module and (for blocks) its layer index."""
    m = _BLOCK.match(key)
    if m:
        return f"aggregator.{m.group(1)}", int(m.group(2))
    parts = key.split(".")
    if parts[0] == "aggregator":
        if parts[1] in ("camera_token", "register_token"):
            return "aggregator.special_tokens", None
        if parts[1] in ("patch_embed", "spatial_mask_head", "mask_bias", "keypoint_bias", "memory_tokens"):
            return "aggregator." + parts[1], None
    return parts[0], None


def _ranges(layers: list[int]) -> str:
    layers = sorted(set(layers))
    out, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ",".join(out)


@dataclass
class ReportRow:
    module: str
    source: str  # "checkpoint" | "pi3" | "init"
    layers: str
    tensors: int
    params: int


@dataclass
class LoadReport:
    rows: list[ReportRow] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    left_at_init: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    source_totals: dict[str, dict[str, int]] = field(default_factory=dict)
    mask_variant: str | None = None
    recipe: str = "seed"
    provenance: dict[str, str] = field(default_factory=dict)  # target key -> "source:key"
    # what the config fitting chose (vggt_mv.weights.autoconfig) and why
    mask_head: str | None = None
    mask_head_reason: str = ""
    track_head: bool | None = None
    track_head_reason: str = ""

    def set_choices(self, choices) -> None:
        """Record a ``ConfigChoices`` (mask-head variant, track head, reasons)."""
        self.mask_head, self.mask_head_reason = choices.mask_head, choices.mask_reason
        self.track_head, self.track_head_reason = choices.track_head, choices.track_reason

    @classmethod
    def from_plan(cls, plan: Plan, target: dict[str, Shape], sources: dict[str, dict[str, Shape]],
                  files: dict[str, str], recipe: str) -> "LoadReport":
        groups: dict[tuple[str, str], list] = defaultdict(lambda: [[], 0, 0])
        provenance = {}
        for tgt, shape in target.items():
            a = plan.assignments.get(tgt)
            src = a.source if a else "init"
            mod, layer = module_of(tgt)
            g = groups[(mod, src)]
            if layer is not None:
                g[0].append(layer)
            g[1] += 1
            g[2] += math.prod(shape)
            provenance[tgt] = f"{a.source}:{a.source_key}" + (f" ({a.transform})" if a and a.transform else "") if a else "init"
        rows = [ReportRow(mod, src, _ranges(g[0]), g[1], g[2]) for (mod, src), g in groups.items()]
        totals = {}
        rule = _DOCUMENTED_SKIPS
        for name, keys in sources.items():
            used = {a.source_key for a in plan.assignments.values() if a.source == name}
            skipped = {s.key for s in plan.skipped if s.source == name and s.key not in used}
            by_rule = {s.key for s in plan.skipped if s.source == name and s.key not in used and s.reason.startswith(rule)}
            totals[name] = {
                "tensors_in_file": len(keys),
                "used": len(used),
                "skipped": len(skipped),
                "skipped_documented": len(by_rule),
                "unexpectedly_unused": len(keys) - len(used) - len(by_rule),
            }
        return cls(rows, [s.__dict__ for s in plan.skipped], dict(plan.left_at_init), files, totals,
                   plan.mask_variant, recipe, provenance)

    # ------------------------------------------------------------------ queries
    def fraction_loaded(self, source: str) -> float:
        """Used / (tensors in the file - documented skips): 1.0 means every expected tensor was consumed."""
        t = self.source_totals[source]
        expected = t["tensors_in_file"] - t["skipped_documented"]
        return t["used"] / expected if expected else 1.0

    def fraction_params_loaded(self) -> float:
        """Share of the model's parameters (elements) that came from files (0..1)."""
        total = sum(r.params for r in self.rows)
        return sum(r.params for r in self.rows if r.source != "init") / total if total else 1.0

    def missing(self) -> dict[str, int]:
        """Report module -> number of tensors left at init that are *not* new modules (no source)."""
        out: dict[str, int] = defaultdict(int)
        for key, why in self.left_at_init.items():
            if not why.startswith("new module"):
                out[module_of(key)[0]] += 1
        return dict(out)

    def unused(self) -> dict[str, list[dict]]:
        """File role -> skipped entries of tensors nothing used and no documented rule explains."""
        rule = _DOCUMENTED_SKIPS
        used = {(p.split(":", 1)[0], p.split(":", 1)[1].split(" (")[0]) for p in self.provenance.values() if p != "init"}
        out: dict[str, list[dict]] = defaultdict(list)
        seen = set()
        for s in self.skipped:
            key = (s["source"], s["key"])
            if key in used or key in seen or s["reason"].startswith(rule):
                continue
            seen.add(key)
            out[s["source"]].append(s)
        return dict(out)

    def strict_problems(self) -> str | None:
        """One line saying what does not fit (tensors without a source, file tensors nothing used), or None.

        Modules the design marks as new (left at init as "new module") are not problems.
        """
        parts = []
        missing = self.missing()
        if missing:
            mods = ", ".join(f"{m} ({n} tensors)" for m, n in sorted(missing.items()))
            parts.append(f"no weights for {mods}")
        for role, entries in self.unused().items():
            reasons: dict[str, int] = defaultdict(int)
            for s in entries:
                reasons[re.sub(r"(shape mismatch).*", r"\1", s["reason"])] += 1
            why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            parts.append(f"{len(entries)} of {self.source_totals[role]['tensors_in_file']} {role} tensors unused "
                         f"({why}; e.g. {entries[0]['key']})")
        if not parts:
            return None
        return "; ".join(parts) + f" ({100 * self.fraction_params_loaded():.1f}% of the model's parameters loaded)"

    def count(self, module: str, source: str) -> int:
        return sum(r.tensors for r in self.rows if r.module == module and r.source == source)

    # ------------------------------------------------------------------ output
    def to_json(self) -> str:
        return json.dumps(
            {
                "recipe": self.recipe,
                "files": self.files,
                "mask_variant": self.mask_variant,
                "mask_head": {"variant": self.mask_head, "reason": self.mask_head_reason},
                "track_head": {"enabled": self.track_head, "reason": self.track_head_reason},
                "modules": [r.__dict__ for r in self.rows],
                "sources": {k: {**v, "fraction_loaded": round(self.fraction_loaded(k), 6)} for k, v in self.source_totals.items()},
                "fraction_params_loaded": round(self.fraction_params_loaded(), 6),
                "problems": self.strict_problems(),
                "skipped": self.skipped,
                "left_at_init": self.left_at_init,
            },
            indent=1,
        )

    def to_table(self) -> str:
        lines = [f"recipe: {self.recipe}"]
        lines += [f"{k}: {v}" for k, v in self.files.items()]
        if self.mask_variant:
            lines.append(f"mask head variant in checkpoint: {self.mask_variant}")
        if self.mask_head_reason:
            lines.append(f"mask head used: {self.mask_head or 'none'} ({self.mask_head_reason})")
        if self.track_head_reason:
            lines.append(f"track head: {'on' if self.track_head else 'off'} ({self.track_head_reason})")
        w = max([len(r.module) for r in self.rows] + [6])
        lines.append(f"{'module':<{w}}  {'source':<10}  {'layers':<8}  {'tensors':>7}  {'params':>13}")
        for r in sorted(self.rows, key=lambda r: (r.module, r.source)):
            lines.append(f"{r.module:<{w}}  {r.source:<10}  {r.layers or '-':<8}  {r.tensors:>7}  {r.params:>13,}")
        for name, t in self.source_totals.items():
            lines.append(
                f"{name}: used {t['used']}/{t['tensors_in_file']} tensors "
                f"({100 * self.fraction_loaded(name):.1f}% of expected; {t['skipped']} skipped, "
                f"{t['skipped_documented']} of them by rule)"
            )
        reasons: dict[str, int] = defaultdict(int)
        for s in self.skipped:
            reasons[f"{s['source']}: {re.sub(r' for .*$', '', s['reason'])}"] += 1
        for reason, n in sorted(reasons.items()):
            lines.append(f"  skipped {n:>4}  {reason}")
        init = defaultdict(int)
        for k, why in self.left_at_init.items():
            init[f"{module_of(k)[0]} ({why})"] += 1
        for m, n in sorted(init.items()):
            lines.append(f"  at init {n:>4}  {m}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()
