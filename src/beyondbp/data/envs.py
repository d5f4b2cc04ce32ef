"""Episodic tasks: gymnasium environments and a deceptive maze, as datasets of episode seeds.

A task is scored by the return of its episodes, not by labels. To fit the harness, an episodic
task is a :class:`~beyondbp.data.core.Dataset` whose splits hold *episode seeds* (``x``, int64;
``y`` is unused zeros): a training batch is the episodes one fitness evaluation plays, the
validation split 30 episodes and the test split 200 (the Deep GA protocol: the elite tested on
200 episodes). ``meta.env`` carries the :class:`EnvSpec`; the net maps an observation to one
score per discrete action (the action is the arg-max) or to a continuous action (squashed by
tanh into the action box). Population rules turn the seeds into returns with :func:`rollout`;
the harness evaluates the trained net the same way (``val_return``, ``test_return``).

Names: ``gym:ID`` for any installed gymnasium environment with a flat observation and a
discrete or box action space (``gym:CartPole-v1``, ``gym:Acrobot-v1``; needs
``pip install 'beyondbp[rl]'``), Atari through ale-py (``gym:ALE/Breakout-v5``, ``pip install
ale-py``; observation: the 128-byte console RAM scaled to [0, 1], not the pixels; episodes
capped at 1,250 steps = 5,000 frames, Deep GA's cap), and ``deceptive-maze`` (below, no
dependency).

:func:`rollout` plays ``copies`` policies on the same episode seeds at once: every environment
copy steps in one loop, the policies' forward passes are one batched call per time step, and
finished episodes stop counting. Gymnasium environments with their own vectorised
implementation (CartPole) run as one; the others as a pool of ``gym.make`` instances, each
reset with its episode's seed (so every policy meets the same start state); the maze is
vectorised in numpy.

The deceptive maze (after Lehman & Stanley's hard maze, the task of Such et al.'s novelty search
experiment): a point robot in a 10 x 10 arena starts at (5, 4) inside a cup, an upside-down U
(bar at y 7-7.5 from x 2 to 8, arms down to y 1) open at the bottom; the goal is at (5, 9),
straight ahead beyond the bar. The return is minus the final distance to the goal, so walking
straight up against the bar (distance 2) beats every way out, which must first go down and
away from the goal (distance 7 and more) and then round an arm: reward-only search is drawn
into the trap.
Observation (x/10, y/10, t/T); action: a velocity in [-1, 1]² (speed 0.3 per step, 100 steps);
a move into a wall is dropped axis by axis (the robot slides along walls). Behaviour: the final
position. Every episode lasts the 100 steps: passing by the goal is not enough, the robot must
end there (solved: final distance < 0.5, return > −0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from beyondbp.errors import BeyondBPError, DataError

TRAIN_EPISODES, VAL_EPISODES, TEST_EPISODES = 100, 30, 200


@dataclass(frozen=True)
class EnvSpec:
    """What a rule needs to play an episodic task (picklable: sent to Ray actors)."""

    id: str  # "gym:CartPole-v1" or "deceptive-maze"
    obs_dim: int
    actions: int  # discrete actions, or the dimension of a continuous action
    discrete: bool
    low: tuple[float, ...] = ()  # the action box (continuous actions)
    high: tuple[float, ...] = ()
    max_steps: int = 500
    obs_scale: float = 1.0  # observations are multiplied by it (1/255 for bytes: Atari RAM)

    def make(self, n: int) -> BatchEnv:
        if self.id == MAZE_ID:
            return MazeBatch(n)
        env_id = self.id.removeprefix("gym:")
        vectorised = _gymnasium().envs.registry[env_id].vector_entry_point is not None
        if vectorised and not env_id.startswith("ALE/"):  # ALE's own is a pixel pipeline
            return VectorGymBatch(env_id, n, self.max_steps)
        return GymBatch(env_id, n, self.max_steps)


class BatchEnv:
    """n environment copies stepped together (only the active ones)."""

    n: int

    def reset(self, seeds: np.ndarray) -> np.ndarray:  # (n, obs_dim)
        raise NotImplementedError

    def step(
        self, actions: np.ndarray, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # obs, reward, done (n, ...)
        raise NotImplementedError

    def behaviour(self, obs: np.ndarray) -> np.ndarray:
        """Behaviour characterisation of the episodes that ended in ``obs``: the final state."""
        return obs


class GymBatch(BatchEnv):
    """A pool of ``gym.make`` instances, stepped in a loop (only the active ones)."""

    def __init__(self, env_id: str, n: int, max_steps: int) -> None:
        gym = _gymnasium()
        self.envs = [_make(gym, env_id, max_episode_steps=max_steps) for _ in range(n)]
        self.n = n

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        return np.stack(
            [env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)]
        )

    def step(self, actions, active):  # type: ignore[no-untyped-def]
        obs = np.zeros((self.n, *self.envs[0].observation_space.shape), dtype=np.float32)
        reward = np.zeros(self.n)
        done = np.ones(self.n, dtype=bool)
        for i in np.flatnonzero(active):
            o, r, term, trunc, _ = self.envs[i].step(actions[i])
            obs[i], reward[i], done[i] = o, r, term or trunc
        return obs, reward, done


class VectorGymBatch(BatchEnv):
    """An environment's own vectorised implementation (``gym.make_vec``, e.g. CartPole's
    numpy one: all copies in one array op). It draws every copy's start state from one
    generator, seeded from the episode seeds, so copies differ even on the same seed."""

    def __init__(self, env_id: str, n: int, max_steps: int) -> None:
        gym = _gymnasium()
        self.env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                                max_episode_steps=max_steps)  # fmt: skip
        self.n = n

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        seed = int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])
        return self.env.reset(seed=seed)[0]

    def step(self, actions, active):  # type: ignore[no-untyped-def]
        obs, reward, term, trunc, _ = self.env.step(actions)
        return obs, reward, term | trunc


MAZE_ID = "deceptive-maze"
_WALLS = np.array(  # (x0, y0, x1, y1): the U trap, open towards the start
    [[2.0, 7.0, 8.0, 7.5], [2.0, 1.0, 2.5, 7.5], [7.5, 1.0, 8.0, 7.5]]
)
_START, _GOAL, _SPEED, _STEPS, _SIZE = (5.0, 4.0), (5.0, 9.0), 0.3, 100, 10.0


class MazeBatch(BatchEnv):
    def __init__(self, n: int) -> None:
        self.n = n

    def _obs(self) -> np.ndarray:
        t = np.full((self.n, 1), self.t / _STEPS)
        return np.concatenate([self.pos / _SIZE, t], 1).astype(np.float32)

    def reset(self, seeds: np.ndarray) -> np.ndarray:  # deterministic: seeds are not needed
        self.pos = np.tile(np.array(_START), (self.n, 1))
        self.t = 0
        return self._obs()

    @staticmethod
    def blocked(p: np.ndarray) -> np.ndarray:
        inside = (p[:, None, 0] >= _WALLS[:, 0]) & (p[:, None, 0] <= _WALLS[:, 2])
        inside &= (p[:, None, 1] >= _WALLS[:, 1]) & (p[:, None, 1] <= _WALLS[:, 3])
        out = (p < 0).any(1) | (p > _SIZE).any(1)
        return inside.any(1) | out

    def step(self, actions, active):  # type: ignore[no-untyped-def]
        move = np.clip(actions, -1, 1) * _SPEED * active[:, None]
        for axis in (0, 1):  # slide along walls: each axis moves unless it would enter a wall
            trial = self.pos.copy()
            trial[:, axis] += move[:, axis]
            ok = ~self.blocked(trial)
            self.pos[ok, axis] = trial[ok, axis]
        self.t += 1
        dist = np.linalg.norm(self.pos - np.array(_GOAL), axis=1)
        done = np.full(self.n, self.t >= _STEPS)
        reward = np.where(done & active, -dist, 0.0)  # the return is −(final distance)
        return self._obs(), reward, done

    def behaviour(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, :2] * _SIZE


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise BeyondBPError(
            "gymnasium environments need gymnasium: pip install 'beyondbp[rl]'"
        ) from None
    try:  # Atari (ALE/...): ale-py ships the ROMs; its environments register on import
        import ale_py

        gymnasium.register_envs(ale_py)
    except ImportError:
        pass
    return gymnasium


ATARI_STEPS = 1250  # Deep GA's ≤ 5,000 frames per episode, at the v5 frame skip of 4


def _make(gym: Any, env_id: str, **kw: Any) -> Any:
    """gym.make; Atari (``ALE/...``) with the 128-byte console RAM as its observation."""
    if env_id.startswith("ALE/"):
        kw.setdefault("obs_type", "ram")
    return gym.make(env_id, **kw)


def env_spec(name: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``gym:ID`` or ``deceptive-maze``; clear errors otherwise."""
    if name == MAZE_ID:
        return EnvSpec(MAZE_ID, 3, 2, False, (-1.0, -1.0), (1.0, 1.0), _STEPS)
    gym = _gymnasium()
    env_id = name.removeprefix("gym:")
    try:
        env = _make(gym, env_id)
    except Exception as e:  # gymnasium raises several kinds (NameNotFound, DependencyNotInstalled)
        raise DataError(f"{name}: gymnasium cannot make {env_id!r} ({e})") from None
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise DataError(
            f"{name}: only flat (vector) observations are supported, not {obs}; for Atari use "
            "the console RAM, which gym:ALE/... ids get by default"
        )
    max_steps = env.spec.max_episode_steps or (ATARI_STEPS if env_id.startswith("ALE/") else 1000)
    scale = 1 / 255 if obs.dtype == np.uint8 else 1.0
    if isinstance(act, gym.spaces.Discrete):
        return EnvSpec(name, obs.shape[0], int(act.n), True, max_steps=max_steps, obs_scale=scale)
    if isinstance(act, gym.spaces.Box) and len(act.shape) == 1:
        low, high = tuple(map(float, act.low)), tuple(map(float, act.high))
        return EnvSpec(name, obs.shape[0], act.shape[0], False, low, high, max_steps, scale)
    raise DataError(f"{name}: action space {act} is neither discrete nor a flat box")


def to_actions(spec: EnvSpec, scores: torch.Tensor) -> np.ndarray:
    """Net outputs (..., actions) to environment actions: arg-max, or tanh into the box."""
    if spec.discrete:
        return scores.argmax(-1).cpu().numpy()
    lo = torch.tensor(spec.low, dtype=scores.dtype, device=scores.device)
    hi = torch.tensor(spec.high, dtype=scores.dtype, device=scores.device)
    return (lo + (torch.tanh(scores) + 1) * (hi - lo) / 2).cpu().numpy()


Policy = Callable[[torch.Tensor], torch.Tensor]  # obs (copies, E, obs_dim) -> (copies, E, A)


@torch.no_grad()
def rollout(
    policy: Policy,
    spec: EnvSpec,
    seeds: torch.Tensor,
    copies: int,
    device: torch.device | str = "cpu",
    pool: dict[int, BatchEnv] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Play each of ``copies`` policies on every episode seed: returns (copies, E) and
    behaviours (copies, E, k: the final state). ``pool`` caches environment copies between calls."""
    e = len(seeds)
    n = copies * e
    env = pool.get(n) if pool is not None else None
    if env is None:
        env = spec.make(n)
        if pool is not None:
            pool[n] = env
    obs = env.reset(np.tile(seeds.cpu().numpy().astype(np.int64), copies))
    total = np.zeros(n)
    active = np.ones(n, dtype=bool)
    final = obs.copy()
    for _ in range(spec.max_steps):
        x = torch.as_tensor(obs, dtype=torch.float32, device=device).view(copies, e, -1)
        x = x * spec.obs_scale if spec.obs_scale != 1.0 else x
        actions = to_actions(spec, policy(x)).reshape(n, *(() if spec.discrete else (-1,)))
        obs, reward, done = env.step(actions, active)
        total += np.where(active, reward, 0.0)
        ended = active & done
        final[ended] = obs[ended]
        active &= ~done
        if not active.any():
            break
    final[active] = obs[active]
    returns = torch.as_tensor(total, dtype=torch.float32).view(copies, e)
    behaviour = torch.as_tensor(env.behaviour(final), dtype=torch.float32).view(copies, e, -1)
    return returns, behaviour


def episode_dataset(name: str, data_seed: int = 0):  # type: ignore[no-untyped-def]
    """The episodic task ``name`` as a Dataset of episode seeds (disjoint per split)."""
    from beyondbp.data.core import Dataset, DatasetMeta, Split

    spec = env_spec(name)
    base = data_seed * 1_000_000

    def split(start: int, count: int) -> Split:
        seeds = torch.arange(base + start, base + start + count, dtype=torch.int64)
        return Split(seeds, torch.zeros(count, dtype=torch.int64))

    train, val, test = split(0, TRAIN_EPISODES), split(100_000, VAL_EPISODES), split(200_000, TEST_EPISODES)  # fmt: skip
    names = tuple(f"action {i}" for i in range(spec.actions))
    meta = DatasetMeta(
        name=name, input_shape=(spec.obs_dim,), classes=spec.actions, class_names=names,
        mean=(0.0,), std=(1.0,), source="gymnasium" if name != MAZE_ID else "beyondbp",
        notes="episodic task: splits hold episode seeds; scores are returns",
        data_seed=data_seed, sizes={"train": len(train), "val": len(val), "test": len(test)},
        env=spec,
    )  # fmt: skip
    return Dataset(train, val, test, meta)
