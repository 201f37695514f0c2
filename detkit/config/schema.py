"""The typed config schema: one dataclass per section, defaults in `defaults.yml`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


# ---------------------------------------------------------------- dataset
@dataclass
class AugmentConfig:
    """Training-time data augmentation."""

    flip_horizontal: bool = True
    # Random rescale of the resized image, as a factor range; [1, 1] disables it.
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Probability of a random crop that keeps every box centre.
    crop_probability: float = 0.0
    # Minimum side of the crop window, as a fraction of the image side.
    crop_min_fraction: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass
class TilesConfig:
    """Large photos with small objects as overlapping tiles at their own resolution (SAHI's sliced inference)."""

    # Side of the square tiles in original-image pixels; 0 = no tiles (the whole photo is resized).
    size: int = 0
    # Fraction of a tile's side shared with its neighbour.
    overlap: float = 0.25
    # Also detect on the whole photo resized (objects larger than a tile), merged with the tiles' by NMS.
    whole_image: bool = True
    # Training crops keep a box when at least this fraction of its area is inside the crop.
    min_visible: float = 0.5


@dataclass
class ImageConfig:
    """How images are resized before entering the network."""

    min_size: int = 600
    max_size: int = 1000
    # How the resized size is rounded: "round" (detkit), or "floor" (torchvision's F.interpolate).
    size_rounding: Literal["round", "floor"] = "round"
    tiles: TilesConfig = field(default_factory=TilesConfig)


@dataclass
class DatasetConfig:
    """Where the TFRecords are and how they are read."""

    dir: Optional[str] = None
    split: str = "train"
    # Further (dir, split) sources mixed into training, as "DIR:SPLIT" strings.
    extra_sources: list[str] = field(default_factory=list)
    image: ImageConfig = field(default_factory=ImageConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Repeat factor sampling (LVIS): an image is repeated max(1, sqrt(t / f_c)) times per epoch, f_c the fraction
    # of training images holding its rarest class c and t this threshold; 0 = off.
    repeat_factor_threshold: float = 0.0
    shuffle_buffer: int = 512
    num_parallel_calls: int = 2
    cache: bool = True


# ---------------------------------------------------------------- model
# The maps each body gives the fpn architecture, by their strides, finest first (detkit/models/bodies.py builds
# them; the FPN adds one more level, max-pooled from the last, at twice its stride).
PYRAMID_STRIDES = {"small_resnet": (4, 8, 16), "resnet50_tv": (4, 8, 16, 32), "resnet101_tv": (4, 8, 16, 32),
                   "mobilenet_v3_large_tv": (32, 32)}
# Bodies of torchvision's layout and how many stages its trainable_layers counts in each.
TV_BODY_STAGES = {"resnet50_tv": 5, "resnet101_tv": 5, "mobilenet_v3_large_tv": 6}


@dataclass
class BaseNetworkConfig:
    """The backbone CNN: cut at stride 16, or (the *_tv bodies) several levels in torchvision's layout."""

    name: Literal["vgg16", "resnet50", "resnet101", "mobilenet_v2", "small_resnet",
                  "resnet50_tv", "resnet101_tv", "mobilenet_v3_large_tv"] = "resnet50"
    # "imagenet", "none", or a path to a weights file.
    weights: str = "imagenet"
    trainable: bool = True
    # Layers before this one stay frozen ("" = fine-tune everything).
    fine_tune_from: str = ""
    freeze_batchnorm: bool = True
    # *_tv bodies: stages trained, counted from the top, as torchvision's trainable_layers; None = its choice.
    trainable_layers: Optional[int] = None
    # Channel widths of small_resnet's four stages (strides 2, 4, 8, 16).
    small_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    # Residual blocks per small_resnet stage.
    small_blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 2])


@dataclass
class AnchorsConfig:
    """Anchor sizes (pixels, square-root of area) and aspect ratios (height / width)."""

    sizes: list[float] = field(default_factory=lambda: [64.0, 128.0, 256.0, 512.0])
    ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])


@dataclass
class TargetConfig:
    """IoU matching and balanced sampling for one stage."""

    foreground_iou: float = 0.7
    background_iou_high: float = 0.3
    background_iou_low: float = 0.0
    minibatch_size: int = 256
    foreground_fraction: float = 0.5


@dataclass
class ProposalsConfig:
    """Top-N before and after NMS, for one phase (train or test)."""

    pre_nms_top_n: int = 12000
    post_nms_top_n: int = 2000


@dataclass
class RPNConfig:
    """Region proposal network: head, targets, proposals, loss."""

    channels: int = 512
    target: TargetConfig = field(default_factory=TargetConfig)
    # Anchors crossing the image border by more than this many pixels are ignored in training; < 0 keeps all.
    allowed_border: float = -1.0
    # When no anchor passes foreground_iou, each ground-truth box's best anchors become foreground.
    match_low_quality: bool = True
    train_proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    test_proposals: ProposalsConfig = field(
        default_factory=lambda: ProposalsConfig(pre_nms_top_n=6000, post_nms_top_n=300)
    )
    nms_iou: float = 0.7
    min_box_size: float = 0.0
    smooth_l1_beta: float = 0.1111


@dataclass
class RoIPoolingConfig:
    """crop_and_resize to crop_size, then max-pool by pool_stride."""

    crop_size: int = 14
    pool_stride: int = 2


@dataclass
class PostprocessConfig:
    """Final detections: per-class NMS, score threshold and caps."""

    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_per_class: int = 100
    max_total: int = 300
    # Detections with a side shorter than this (pixels of the resized image) are dropped; 0 = keep all.
    min_box_size: float = 0.0


@dataclass
class RCNNConfig:
    """Second stage: RoI classification and class-specific box refinement."""

    enabled: bool = True
    head: Literal["fc", "conv5"] = "fc"
    # Channels of the 1x1 conv that thins a single-level body's map before RoI pooling; 0 = none; None = 256
    # with single_level, none with fpn (whose pyramid is already model.fpn.channels wide).
    reduce_channels: Optional[int] = None
    fc_sizes: list[int] = field(default_factory=lambda: [1024, 1024])
    dropout: float = 0.0
    target: TargetConfig = field(
        default_factory=lambda: TargetConfig(
            foreground_iou=0.5, background_iou_high=0.5, background_iou_low=0.0,
            minibatch_size=256, foreground_fraction=0.25,
        )
    )
    add_gt_boxes: bool = True
    # Box-delta scaling (dx, dy, dw, dh) = 1/weights, as torchvision's (10, 10, 5, 5).
    box_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    smooth_l1_beta: float = 1.0


@dataclass
class LossWeightsConfig:
    """Weights of the four losses and of L2 weight decay."""

    rpn_class: float = 1.0
    rpn_box: float = 1.0
    rcnn_class: float = 1.0
    rcnn_box: float = 1.0
    l2: float = 0.0005


@dataclass
class RoIAlignConfig:
    """Multi-level RoIAlign of the fpn architecture (torchvision's MultiScaleRoIAlign)."""

    output_size: int = 7
    sampling_ratio: int = 2
    # An RoI of sqrt(area) canonical_size pixels is pooled from level canonical_level (P4).
    canonical_size: float = 224.0
    canonical_level: int = 4


@dataclass
class FPNConfig:
    """The fpn architecture: pyramid, per-level anchors, proposal filtering, RoIAlign."""

    channels: int = 256
    # The strides of the body's maps the pyramid is built on, finest first; [] = all of the body's.
    body_strides: list[int] = field(default_factory=list)
    # Anchor sizes of each pyramid level, finest first (the body's levels, then the max-pooled one).
    anchor_sizes: list[list[float]] = field(default_factory=lambda: [[32.0], [64.0], [128.0], [256.0], [512.0]])
    # The batch is zero-padded (after normalisation) to a multiple of this.
    size_divisible: int = 32
    # Proposals whose objectness probability is below this are dropped before NMS.
    rpn_score_threshold: float = 0.0
    roi_align: RoIAlignConfig = field(default_factory=RoIAlignConfig)


@dataclass
class ModelConfig:
    """The Faster R-CNN architecture."""

    # single_level: one stride-16 map, crop_and_resize + max-pool; fpn: a feature pyramid with RoIAlign.
    architecture: Literal["single_level", "fpn"] = "single_level"
    base_network: BaseNetworkConfig = field(default_factory=BaseNetworkConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_pooling: RoIPoolingConfig = field(default_factory=RoIPoolingConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    rcnn: RCNNConfig = field(default_factory=RCNNConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    loss_weights: LossWeightsConfig = field(default_factory=LossWeightsConfig)


# ---------------------------------------------------------------- train
@dataclass
class OptimizerConfig:
    """Optimizer kind and its hyper-parameters."""

    type: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    # Global gradient-norm clipping; 0 disables it.
    clip_norm: float = 10.0


@dataclass
class LearningRateConfig:
    """Learning-rate schedule: constant, piecewise steps or cosine, after a linear warm-up."""

    schedule: Literal["constant", "piecewise", "cosine"] = "piecewise"
    base: float = 0.001
    # piecewise: at each boundary (fraction of num_steps if <= 1, else a step) multiply by `factor`.
    boundaries: list[float] = field(default_factory=lambda: [0.7])
    factor: float = 0.1
    warmup_steps: int = 100
    # cosine: final learning rate as a fraction of base.
    final_fraction: float = 0.01


@dataclass
class TrainConfig:
    """The training run."""

    # `detkit train` derives the keys the config leaves unset from the training data (detkit/recipe/).
    recipe: bool = True
    job_dir: str = "jobs"
    run_name: str = ""
    batch_size: int = 1
    num_steps: int = 0
    num_epochs: int = 20
    # Stop after this many minutes of training (0 = no time limit); the schedule ends with it.
    max_minutes: float = 0.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    learning_rate: LearningRateConfig = field(default_factory=LearningRateConfig)
    seed: int = 0
    init_from: str = ""
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 10.0
    keep_checkpoints: int = 3
    log_every_steps: int = 20
    image_summary_every_steps: int = 200
    eval_split: str = ""
    eval_every_steps: int = 0
    # tf.distribute strategy; auto = multi_worker when TF_CONFIG names a cluster, mirrored with several GPUs,
    # else one_device. batch_size is the global batch, split evenly over the replicas.
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    # Keras dtype policy; auto = mixed_float16 on tensor-core GPUs, mixed_bfloat16 on CPUs whose oneDNN
    # runs bfloat16 natively, float32 otherwise.
    mixed_precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    # `detkit train --local-workers N`: seconds a worker gets to exit after another one failed.
    local_workers_kill_grace_seconds: float = 10.0


# ---------------------------------------------------------------- eval / predict
@dataclass
class EvalConfig:
    """Evaluation of a checkpoint on a split."""

    split: str = "test"
    iou_threshold: float = 0.5


@dataclass
class PredictConfig:
    """Prediction on user images."""

    min_prob: float = 0.5
    max_detections: int = 100
    batch_size: int = 1


@dataclass
class Config:
    """The whole detkit configuration."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
