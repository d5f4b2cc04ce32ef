"""Tasks: what is learned and how it is scored.

A :class:`Task` owns its splits, how a training batch is drawn, the validation loss and metrics,
and :meth:`Task.evaluate`. The harness loop is the same for every task; a rule says which task
kinds it learns (``Rule.tasks``), and a grid over "all rules" skips the pairs that do not fit.

Five kinds exist:

- ``classification`` (:class:`~beyondbp.tasks.classification.ClassificationTask`): labelled
  tensors; shuffled mini-batches; cross-entropy (or the rule's own ``eval_loss``) and accuracy.
- ``episodic`` (:class:`~beyondbp.tasks.episodic.EpisodicTask`): the splits hold episode seeds;
  a batch is the episodes one fitness evaluation plays; scored by the mean return.
- ``graph`` (:class:`~beyondbp.tasks.graph.GraphNodeTask`): node classification on one graph,
  full-batch; the splits hold node indices, the net is bound to the graph (``attach``).
- ``graph-link`` (:class:`~beyondbp.tasks.graph.GraphLinkTask`): link prediction; the splits
  hold node pairs, scored by ROC-AUC and Hits@50 besides loss and accuracy.

- ``lm`` (:class:`~beyondbp.tasks.lm.LMTask`): a language model answers prompts; scored by
  exact answers, by label words' scores (as classification) or by perplexity
  (:mod:`beyondbp.data.lm`).

Where the next kind plugs in (design note; not built here):

- *Reward-scored generation* (diffusion fine-tuning, agents): ``RewardTask(Task)`` with
  ``kind = "generative"``: a batch is a set of prompts (or noise seeds), :meth:`Task.evaluate`
  samples from ``rule.predict`` (the generator) and returns the reward model's mean score
  (``loss = −reward``, as the episodic task does with returns), plus the task's own metrics
  (diversity, a judge's accuracy). Early stopping, checkpoints and probes need nothing new.
"""

from __future__ import annotations

from beyondbp.data import Dataset
from beyondbp.data.core import is_episodic, is_graph, is_lm
from beyondbp.tasks.base import Task
from beyondbp.tasks.classification import ClassificationTask
from beyondbp.tasks.episodic import EpisodicTask
from beyondbp.tasks.graph import GraphLinkTask, GraphNodeTask
from beyondbp.tasks.lm import LMTask

TASK_KINDS: dict[str, type[Task]] = {
    ClassificationTask.kind: ClassificationTask,
    EpisodicTask.kind: EpisodicTask,
    GraphNodeTask.kind: GraphNodeTask,
    GraphLinkTask.kind: GraphLinkTask,
    LMTask.kind: LMTask,
}


def task_kind(data: Dataset | str) -> str:
    """The kind of task a dataset (or a dataset name, without loading it) poses."""
    if is_lm(data) if isinstance(data, str) else data.meta.text is not None:
        return LMTask.kind
    if isinstance(data, str):
        episodic, graph = is_episodic(data), is_graph(data)
        links = graph and data.partition(":")[2] == "links"
    else:
        episodic, graph = data.meta.env is not None, data.meta.graph is not None
        links = graph and hasattr(data.meta.graph, "split_edges")
    if graph:
        return GraphLinkTask.kind if links else GraphNodeTask.kind
    return EpisodicTask.kind if episodic else ClassificationTask.kind


def make_task(data: Dataset) -> Task:
    """The task a loaded dataset poses."""
    return TASK_KINDS[task_kind(data)](data)


__all__ = [
    "TASK_KINDS",
    "ClassificationTask",
    "EpisodicTask",
    "GraphLinkTask",
    "GraphNodeTask",
    "LMTask",
    "Task",
    "make_task",
    "task_kind",
]
