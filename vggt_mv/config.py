"""Typed model configuration: ``ModelConfig`` and its sub-configs, presets, and JSON I/O.

Field names follow the reference fixtures' ``model_config.json`` (see ``shared/reference``), so
``ModelConfig.from_json(path)`` reads them directly.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DinoConfig:
    """DINOv2 ViT encoder (``aggregator.patch_embed``)."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    pos_embed_shape: list[int] | None = None
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0
    init_values: float = 1.0
    block_chunks: int = 0
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    qk_norm: bool = False
    norm_eps: float = 1e-6
    ffn_layer: str = "mlp"
    output: str = "x_norm_patchtokens"
    has_mask_token: bool = True


@dataclass
class CameraHeadConfig:
    dim_in: int = 2048
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    qk_norm: bool = False
    rope: bool = False
    norm_eps: float = 1e-5
    adaln_eps: float = 1e-6
    target_dim: int = 9
    pose_encoding_type: str = "absT_quaR_FoV"
    trans_act: str = "linear"
    quat_act: str = "linear"
    fl_act: str = "relu"
    num_iterations: int = 4
    pose_branch_hidden: int | None = None  # default dim_in // 2


@dataclass
class DPTHeadConfig:
    dim_in: int = 2048
    patch_size: int = 14
    output_dim: int = 4
    activation: str = "inv_log"
    conf_activation: str = "expp1"
    features: int = 256
    out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    intermediate_layer_idx: list[int] = field(default_factory=lambda: [4, 11, 17, 23])
    pos_embed: bool = True
    feature_only: bool = False
    down_ratio: int = 1
    head_features_2: int = 32
    norm_eps: float = 1e-5
    frames_chunk_size: int = 8


@dataclass
class TrackHeadConfig:
    dim_in: int = 2048
    patch_size: int = 14
    features: int = 128
    iters: int = 4
    predict_conf: bool = True
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    hidden_size: int = 384
    updateformer_depth: int = 6
    updateformer_num_heads: int = 8
    num_virtual_tracks: int = 64
    mlp_ratio: float = 4.0
    max_scale: int = 518
    feature_extractor: DPTHeadConfig | None = None


@dataclass
class MaskConfig:
    """Dynamic-mask head and the attention bias it drives (DESIGN §3)."""

    enabled: bool = False
    head: Literal["page4d", "fin10"] = "page4d"
    hidden: int = 256
    mask_layer: int = 9
    bias_layers: list[int] = field(default_factory=lambda: list(range(10, 20)))
    bias_blocks: list[str] = field(default_factory=lambda: ["global"])
    mode: Literal["tokens", "streams"] = "tokens"
    logit_sign: float = -1.0
    mask_center: float = 0.5
    lambda_pose: float = 0.0
    lambda_geo: float = 0.0
    lambda_pose_t: float = 0.0
    lambda_geo_t: float = 0.0
    lambda_bound: float = 64.0
    # New (non-PAGE) parameters: learnable lambdas / fusion scalars add state_dict keys, so the
    # PAGE/VGGT presets keep them off (fixed buffers) to match the released key sets exactly.
    learnable_lambdas: bool = False
    learnable_fusion: bool = False
    separate_stream_blocks: bool = False  # streams mode: copy blocks for the pose stream
    # How the model's logit and the external mask are fused: "scalar" = s*a_f*z' + b_f*M_ext;
    # "gate" = a 1x1 MLP on (s*z', M_ext) per patch (new state keys aggregator.mask_bias.gate.*),
    # initialised to equal scalar fusion with a_f = b_f = 1.
    fusion: Literal["scalar", "gate"] = "scalar"
    gate_hidden: int = 8


@dataclass
class SparseConfig:
    """Sparse Global-SA replacing View-SA at ``layers`` (DESIGN §3)."""

    strategy: Literal["none", "landmark", "dilated", "memory_bank"] = "none"
    layers: list[int] = field(default_factory=lambda: [22, 23])
    landmark_k: int = 64
    dilated_offsets: list[int] = field(default_factory=lambda: [0, 1, -1, 2, -2, 4, -4])
    memory_tokens: int = 32
    # Keypoint bias on the sparse layers' logits (DESIGN §3): geo rows + lambda_kpt * K_j, pose rows
    # + lambda_kpt_pose * K_j, K = the external keypoint map max-pooled to patches (special keys: 0).
    lambda_kpt: float = 0.0
    lambda_kpt_pose: float = 0.0
    lambda_kpt_bound: float = 8.0
    # learnable: nn.Parameters (new state keys aggregator.keypoint_bias.*); else non-persistent buffers
    learnable_kpt_lambdas: bool = False


@dataclass
class TimeBiasConfig:
    """Relative-time bias ``-strength * (dt)^2`` on Time-SA logits; 0 = no effect (default)."""

    strength: float = 0.0


_SUB = {
    "dino": DinoConfig,
    "camera_head": CameraHeadConfig,
    "depth_head": DPTHeadConfig,
    "point_head": DPTHeadConfig,
    "track_head": TrackHeadConfig,
    "mask": MaskConfig,
    "sparse": SparseConfig,
    "time_bias": TimeBiasConfig,
}


@dataclass
class ModelConfig:
    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    qk_norm: bool = True
    layerscale_init: float = 0.01
    rope_freq: float = 100.0
    aa_order: list[str] = field(default_factory=lambda: ["time", "view"])
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-5
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    dino: DinoConfig = field(default_factory=DinoConfig)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    depth_head: DPTHeadConfig = field(
        default_factory=lambda: DPTHeadConfig(output_dim=2, activation="exp")
    )
    point_head: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    track_head: TrackHeadConfig = field(default_factory=TrackHeadConfig)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    mask: MaskConfig = field(default_factory=MaskConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    time_bias: TimeBiasConfig = field(default_factory=TimeBiasConfig)
    layout: Literal["flat", "factorized"] = "flat"
    # Fit the mask-head variant and the track head to the checkpoint's keys when loading
    # (vggt_mv.weights.autoconfig). On by default (also for configs saved before the field existed);
    # the vggt / page4d* presets set it off: their architecture is fixed by the preset.
    follow_checkpoint: bool = True
    notes: str = ""
    name: str = "custom"

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        return 1 + self.num_register_tokens

    # ------------------------------------------------------------------ validation
    def validate(self) -> "ModelConfig":
        for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("patch_size", "embed_dim"):
            if getattr(self.dino, name) != getattr(self, name):
                raise ValueError(f"dino.{name} ({getattr(self.dino, name)}) must equal {name} ({getattr(self, name)})")
        if self.dino.depth <= 0 or self.dino.num_heads <= 0 or self.dino.embed_dim % self.dino.num_heads:
            raise ValueError(f"dino: depth {self.dino.depth} and num_heads {self.dino.num_heads} must be positive "
                             f"and divide embed_dim {self.dino.embed_dim}")
        heads = [("camera_head", self.camera_head, self.enable_camera), ("depth_head", self.depth_head, self.enable_depth),
                 ("point_head", self.point_head, self.enable_point), ("track_head", self.track_head, self.enable_track)]
        for name, head, on in heads:
            if on and head.dim_in != 2 * self.embed_dim:
                raise ValueError(f"{name}.dim_in ({head.dim_in}) must be 2 * embed_dim ({2 * self.embed_dim})")
        extractor = self.track_head.feature_extractor or DPTHeadConfig()  # the default reads VGGT's layers
        for name, head, on in heads[1:3] + [("track_head.feature_extractor", extractor, self.enable_track)]:
            if on and any(not 0 <= i < self.depth for i in head.intermediate_layer_idx):
                raise ValueError(f"{name}.intermediate_layer_idx {head.intermediate_layer_idx} must lie in "
                                 f"0..{self.depth - 1} (depth is {self.depth}); list layers of this model")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if sorted(self.aa_order) != ["time", "view"]:
            raise ValueError(f"aa_order must be a permutation of ['time', 'view'], got {self.aa_order}")
        if self.layout not in ("flat", "factorized"):
            raise ValueError(f"layout must be 'flat' or 'factorized', got {self.layout!r}")
        m = self.mask
        if m.enabled:
            if m.head not in ("page4d", "fin10"):
                raise ValueError(f"mask.head must be 'page4d' or 'fin10', got {m.head!r}")
            if m.mode not in ("tokens", "streams"):
                raise ValueError(f"mask.mode must be 'tokens' or 'streams', got {m.mode!r}")
            if not m.bias_layers:
                raise ValueError("mask.bias_layers is empty; give the layers the mask biases")
            if any(not 0 <= i < self.depth for i in m.bias_layers):
                raise ValueError(f"mask.bias_layers {m.bias_layers} must lie in 0..{self.depth - 1} (depth is {self.depth})")
            if not 0 <= m.mask_layer < min(m.bias_layers):
                raise ValueError(
                    f"mask.mask_layer ({m.mask_layer}) must be < min(bias_layers) ({min(m.bias_layers)}): "
                    "the mask is computed after that layer's frame block and used in later layers"
                )
            bad = set(m.bias_blocks) - {"global", "frame"}
            if bad:
                raise ValueError(f"mask.bias_blocks may contain 'global'/'frame', got {sorted(bad)}")
            if m.lambda_bound <= 0:
                raise ValueError("mask.lambda_bound must be > 0")
            if m.fusion not in ("scalar", "gate"):
                raise ValueError(f"mask.fusion must be 'scalar' or 'gate', got {m.fusion!r}")
        s = self.sparse
        if s.strategy not in ("none", "landmark", "dilated", "memory_bank"):
            raise ValueError(
                f"sparse.strategy must be one of none/landmark/dilated/memory_bank, got {s.strategy!r}"
            )
        if s.strategy != "none":
            if any(not 0 <= i < self.depth for i in s.layers):
                raise ValueError(f"sparse.layers {s.layers} outside 0..{self.depth - 1}")
            if 0 not in s.dilated_offsets:
                raise ValueError("sparse.dilated_offsets must contain 0 (the query's own time)")
        if s.lambda_kpt_bound <= 0:
            raise ValueError("sparse.lambda_kpt_bound must be > 0")
        for name in ("lambda_kpt", "lambda_kpt_pose"):
            value = float(getattr(s, name))
            if not abs(value) <= s.lambda_kpt_bound:
                raise ValueError(f"sparse.{name}={value:g} is outside +-lambda_kpt_bound ({s.lambda_kpt_bound:g})")
        return self

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict of the project's field names; the design notes' names (``ALIASES``) are accepted too."""
        return _build(cls, apply_aliases(d), "model config").validate()

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"--config {path} is not a JSON text file (a checkpoint? pass it as --checkpoint); "
                             "give a model_config.json") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        for wrapper in ("model", "config", "model_config"):  # a fixture's config.json / our manifests
            if isinstance(d.get(wrapper), dict) and "embed_dim" not in d:
                d = d[wrapper]
                break
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    def replace(self, **kw: Any) -> "ModelConfig":
        """A copy with top-level fields replaced; nested configs may be given as dicts."""
        d = self.to_dict()
        for k, v in kw.items():
            if k in _SUB and isinstance(v, dict):
                d[k] = {**d[k], **v}
            else:
                d[k] = v
        return ModelConfig.from_dict(d)

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """The named preset (``vggt_mv.presets``), validated."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        cfg = copy.deepcopy(PRESETS[name]())
        cfg.name = name
        return cfg.validate()


#: Named presets: builder name -> builder. ``vggt_mv.presets`` registers them (``register_preset``)
#: and is imported with the package, so this module never imports it back.
PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_preset(builder: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: make ``builder`` available as ``ModelConfig.preset(builder.__name__)``."""
    PRESETS[builder.__name__] = builder
    return builder


#: The design notes' config names -> the project's fields (README "Config aliases").
#: alias: (section, field, how the value is converted)
ALIASES: dict[str, tuple[str | None, str, str]] = {
    "enable_dual_stream": ("mask", "mode", "true -> 'streams', false -> 'tokens'"),
    "enable_sparse_global": ("sparse", "strategy", "false -> 'none'; true keeps sparse_strategy (default 'landmark')"),
    "sparse_global_layers": ("sparse", "layers", "as is"),
    "sparse_strategy": ("sparse", "strategy", "as is"),
    "lambda_clamp_value": ("mask", "lambda_bound", "as is"),
    "memory_tokens_num": ("sparse", "memory_tokens", "as is"),
    "dilated_levels": ("sparse", "dilated_offsets", "levels [1, 2, 4] (or a count n: 1, 2, .., 2^(n-1)) -> offsets [0, +-1, +-2, +-4]"),
    "use_gating": ("mask", "fusion", "true -> 'gate', false -> 'scalar'"),
}


def _alias_value(alias: str, v: Any, d: dict[str, Any]) -> Any:
    if alias == "enable_dual_stream":
        return "streams" if v else "tokens"
    if alias == "use_gating":
        return "gate" if v else "scalar"
    if alias == "enable_sparse_global":
        if not v:
            return "none"
        return d.get("sparse_strategy") or (d.get("sparse") or {}).get("strategy") or "landmark"
    if alias == "dilated_levels":
        levels = [2**i for i in range(int(v))] if isinstance(v, int) else [int(x) for x in v]
        if any(x <= 0 for x in levels):
            raise ValueError(f"dilated_levels must be positive time offsets, got {v}")
        return [0] + [o for x in levels for o in (x, -x)]
    return v


def apply_aliases(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``d`` with the notes' names (``ALIASES``) moved to the project's fields.

    An alias and the field it names must not disagree (a clear error says which).
    """
    if not isinstance(d, dict) or not any(k in ALIASES for k in d):
        return d
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in ALIASES}
    for alias, (section, name, _) in ALIASES.items():
        if alias not in d:
            continue
        value = _alias_value(alias, d[alias], d)
        if alias == "sparse_strategy" and "enable_sparse_global" in d:
            continue  # enable_sparse_global already decided the strategy (with this value when on)
        sub = out.setdefault(section, {}) if section else out
        if name in sub and sub[name] != value:
            raise ValueError(f"config alias {alias}={d[alias]!r} means {section}.{name}={value!r}, but the "
                             f"config also sets {section}.{name}={sub[name]!r}; keep one of them")
        sub[name] = value
    return out


def _build(kind: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(d) - names - {"head_dim", "patch_start_idx", "aa_block_size"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k not in names:
            continue
        if k in _SUB and kind in (ModelConfig, TrackHeadConfig) and v is not None:
            sub = _SUB[k] if k != "feature_extractor" else DPTHeadConfig
            kw[k] = _build(sub, v, f"{where}.{k}")
        elif k == "feature_extractor" and v is not None:
            kw[k] = _build(DPTHeadConfig, v, f"{where}.{k}")
        else:
            kw[k] = v
    if kind is ModelConfig and "aa_order" in kw:
        kw["aa_order"] = [{"frame": "time", "global": "view"}.get(a, a) for a in kw["aa_order"]]
    return kind(**kw)
