"""Tasks: what is learned and how it is scored.

A :class:`Task` owns its splits, how a training batch is drawn, the validation loss and metrics,
and :meth:`Task.evaluate`. The harness loop is the same for every task; a rule says which task
kinds it learns (``Rule.tasks``), and a grid over "all rules" skips the pairs that do not fit.

Two kinds exist:

- ``classification`` (:class:`~beyondbp.tasks.classification.ClassificationTask`): labelled
  tensors; shuffled mini-batches; cross-entropy (or the rule's own ``eval_loss``) and accuracy.
- ``episodic`` (:class:`~beyondbp.tasks.episodic.EpisodicTask`): the splits hold episode seeds;
  a batch is the episodes one fitness evaluation plays; scored by the mean return.

Where the next kinds plug in (design note; not built here):

- *Node classification on a graph* (ForwardGNN): ``GraphNodeTask(Task)`` with ``kind = "graph"``
  holds one ``torch_geometric.data.Data`` with ``train_mask`` / ``val_mask`` / ``test_mask``.
  :meth:`Task.batches` yields the whole graph once per step (``unit = "dataset"`` rules, or a
  batch-unit rule seeing a single full batch); :meth:`Task.evaluate` runs ``rule.predict`` on the
  full graph and scores the nodes of the split's mask (accuracy, and AUC / Hits@K for a link
  task whose splits come from ``RandomLinkSplit``). Its rules declare ``tasks = ("graph",)``.
- *Reward-scored generation* (diffusion fine-tuning, agents): ``RewardTask(Task)`` with
  ``kind = "generative"``: a batch is a set of prompts (or noise seeds), :meth:`Task.evaluate`
  samples from ``rule.predict`` (the generator) and returns the reward model's mean score
  (``loss = −reward``, as the episodic task does with returns), plus the task's own metrics
  (diversity, a judge's accuracy). Early stopping, checkpoints and probes need nothing new.
"""

from __future__ import annotations

from beyondbp.data import Dataset
from beyondbp.data.core import is_episodic, is_graph
from beyondbp.tasks.base import Task
from beyondbp.tasks.classification import ClassificationTask
from beyondbp.tasks.episodic import EpisodicTask
from beyondbp.tasks.graph import GraphNodeTask

TASK_KINDS: dict[str, type[Task]] = {
    ClassificationTask.kind: ClassificationTask,
    EpisodicTask.kind: EpisodicTask,
    GraphNodeTask.kind: GraphNodeTask,
}


def task_kind(data: Dataset | str) -> str:
    """The kind of task a dataset (or a dataset name, without loading it) poses."""
    if isinstance(data, str):
        episodic, graph = is_episodic(data), is_graph(data)
    else:
        episodic, graph = data.meta.env is not None, data.meta.graph is not None
    if graph:
        return GraphNodeTask.kind
    return EpisodicTask.kind if episodic else ClassificationTask.kind


def make_task(data: Dataset) -> Task:
    """The task a loaded dataset poses."""
    return TASK_KINDS[task_kind(data)](data)


__all__ = [
    "TASK_KINDS",
    "ClassificationTask",
    "EpisodicTask",
    "GraphNodeTask",
    "Task",
    "make_task",
    "task_kind",
]
