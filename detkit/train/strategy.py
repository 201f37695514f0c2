"""Which tf.distribute strategy a run uses: TF_CONFIG parsing, the auto choice, building it, chief detection."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import tensorflow as tf

from detkit.errors import ConfigError, DetkitError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


@dataclass
class ClusterSpec:
    """The parts of TF_CONFIG detkit needs: workers, this task, and who the chief is."""
    workers: list[str]
    task_type: str
    task_index: int
    has_chief_job: bool

    @property
    def num_workers(self) -> int:
        """Processes taking part in training (a separate chief job counts as one)."""
        return len(self.workers) + (1 if self.has_chief_job else 0)

    @property
    def is_chief(self) -> bool:
        """TensorFlow's convention: the `chief` task, or worker 0 when there is no chief job."""
        if self.has_chief_job:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def parse_tf_config(environ: Mapping[str, str] = os.environ) -> Optional[ClusterSpec]:
    """The cluster named by $TF_CONFIG, or None when it is unset, empty or names no cluster."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable TF_CONFIG: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("environment variable TF_CONFIG: expected a JSON object with `cluster` and `task`")
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ConfigError("environment variable TF_CONFIG: `cluster` must map job names to address lists")
    if not cluster:
        return None
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ConfigError(f"environment variable TF_CONFIG: cluster.{job} must be a list of \"host:port\" strings")
    task = data.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ConfigError("environment variable TF_CONFIG: `task` with `type` and `index` is required")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise ConfigError(f"environment variable TF_CONFIG: task.type {task_type!r} is not a job of the cluster "
                          f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise ConfigError(f"environment variable TF_CONFIG: task.index {index!r} is outside cluster.{task_type} "
                          f"(0..{len(cluster[task_type]) - 1})")
    return ClusterSpec(workers=list(cluster.get("worker", [])), task_type=task_type, task_index=index,
                       has_chief_job="chief" in cluster)


def resolve(requested: str, cluster: Optional[ClusterSpec], num_gpus: int) -> tuple[str, str]:
    """(strategy name, why) for train.strategy given the cluster and the visible GPUs."""
    if requested == "auto":
        if cluster is not None and cluster.num_workers > 1:
            return "multi_worker", f"TF_CONFIG names {cluster.num_workers} workers"
        if num_gpus > 1:
            return "mirrored", f"{num_gpus} GPUs visible"
        return "one_device", "one process, " + (f"{num_gpus} GPU" if num_gpus else "no GPU")
    if requested == "multi_worker" and cluster is None:
        raise ConfigError("config key train.strategy: multi_worker needs the TF_CONFIG environment variable "
                          "(or use `detkit train --local-workers N`)")
    return requested, "configured"


def build(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy; call it before any other TensorFlow op so collectives can be configured.

    multi_worker reads TF_CONFIG itself (TensorFlow's cluster resolver); parse_tf_config() has checked it.
    """
    try:
        return _build(name)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "must be configured at program startup" in first:
            # Not the user's config: something in this process ran TensorFlow before the strategy existed.
            raise DetkitError(f"cannot start the {name} strategy: TensorFlow already ran an op in this process "
                              f"({first}); build the strategy before any other TensorFlow work") from None
        raise ConfigError(f"config key train.strategy: cannot start {name} ({first})") from None


def _build(name: str) -> tf.distribute.Strategy:
    """build() without the error translation."""
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        # gRPC on TF_CONFIG's addresses; AUTO picks NCCL on GPUs and ring all-reduce on CPUs.
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"config key train.strategy: unknown strategy {name!r} (one of {', '.join(STRATEGIES)})")


def is_chief(cluster: Optional[ClusterSpec]) -> bool:
    """Whether this process writes the run directory (always, outside a multi-worker cluster)."""
    return cluster is None or cluster.is_chief


@dataclass
class Distribution:
    """The tf.distribute strategy of this process, why it was chosen, and this process's place in the cluster."""
    strategy: tf.distribute.Strategy
    name: str
    why: str
    cluster: Optional[ClusterSpec]

    @property
    def chief(self) -> bool:
        """Whether this process writes the run directory."""
        return is_chief(self.cluster)

    @property
    def workers(self) -> int:
        """Processes training together."""
        return self.cluster.num_workers if self.cluster else 1

    def describe(self) -> str:
        """"strategy NAME (why; N replicas)"."""
        replicas = self.strategy.num_replicas_in_sync
        return f"strategy {self.name} ({self.why}; {replicas} replica{'s' if replicas > 1 else ''})"

    def agree(self, flags: list[bool]) -> list[bool]:
        """Flags OR-ed over all workers, so clock-based decisions (stop, save) are taken by every worker together.

        Saving and stopping involve every worker under multi-worker training: one worker deciding alone on its
        own clock would leave the others waiting in an all-reduce forever.
        """
        if self.workers <= 1:
            return flags

        value = tf.constant([1.0 if f else 0.0 for f in flags])
        reduced = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(tf.identity, args=(value,)),
                                       axis=None)
        return [bool(v > 0.5) for v in reduced.numpy()]


def start(requested: str) -> Distribution:
    """Build the strategy train.strategy names; it must come before any other TensorFlow op runs in this process,
    as multi-worker collectives can only be configured at start-up."""
    cluster = parse_tf_config()
    name, why = resolve(requested, cluster, len(tf.config.list_physical_devices("GPU")))
    return Distribution(build(name), name, why, cluster if name == "multi_worker" else None)
