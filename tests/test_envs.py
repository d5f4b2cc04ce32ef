"""Episodic tasks: gymnasium environments and the deceptive maze as datasets of episode seeds,
batched rollouts, and population rules trained on returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import beyondbp as bb
from beyondbp.data import load_dataset
from beyondbp.data.envs import MazeBatch, env_spec, rollout
from beyondbp.nets import build_net
from beyondbp.rules.population import FlatNet

gym = pytest.importorskip("gymnasium")


def _constant(action: torch.Tensor):
    return lambda obs: action.expand(*obs.shape[:2], -1)


def test_episodic_dataset_holds_disjoint_episode_seeds():
    d = load_dataset("gym:CartPole-v1")
    assert d.meta.env.discrete and d.meta.classes == 2 and d.meta.input_shape == (4,)
    assert (len(d.train), len(d.val), len(d.test)) == (100, 30, 200)
    seeds = [set(s.x.tolist()) for s in (d.train, d.val, d.test)]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])
    other = load_dataset("gym:CartPole-v1", data_seed=1)
    assert not set(other.test.x.tolist()) & seeds[2]


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(bb.BeyondBPError, match="cannot make 'NoSuchEnv-v0'"):
        load_dataset("gym:NoSuchEnv-v0")


def test_maze_walking_straight_up_ends_in_the_trap():
    spec = env_spec("deceptive-maze")
    up = torch.tensor([0.0, 10.0])  # tanh → full speed up
    returns, behaviour = rollout(_constant(up), spec, torch.arange(3), copies=2)
    # from (5, 4) in steps of 0.3 the robot stops just under the bar (y = 7), about 2 from the
    # goal (5, 9), every copy and episode alike (the maze is deterministic)
    x, y = behaviour[..., 0], behaviour[..., 1]
    assert bool((x == 5).all()) and bool(((y > 6.69) & (y <= 7.0)).all())
    torch.testing.assert_close(returns, -(9 - y), rtol=0, atol=1e-5)
    assert bool((returns == returns[0, 0]).all())


def test_maze_walls_stop_moves_axis_by_axis():
    env = MazeBatch(2)
    env.reset(np.zeros(2))
    env.pos = np.array([[2.7, 5.0], [5.0, 1.0]])
    # robot 0 pushes left into the cup's arm (x 2-2.5) and up: it slides up; robot 1 moves freely
    env.step(np.array([[-1.0, 1.0], [1.0, 0.0]]), np.array([True, True]))
    np.testing.assert_allclose(env.pos, [[2.7, 5.3], [5.3, 1.0]])
    assert MazeBatch.blocked(np.array([[2.2, 5.0], [5.0, 7.2], [5.0, 8.0], [-0.1, 1.0]])).tolist() == [
        True, True, False, True
    ]  # fmt: skip


def test_rollout_matches_a_plain_gymnasium_loop():
    # Acrobot has no vectorised implementation: a pool of gym.make copies, each reset with its
    # episode's seed, must give exactly the returns of stepping one environment by hand
    spec = env_spec("gym:Acrobot-v1")
    seeds = torch.tensor([3, 11])
    action = torch.tensor([0.0, 0.0, 1.0])  # arg-max: always torque +1
    returns, _ = rollout(_constant(action), spec, seeds, copies=2)
    for j, s in enumerate(seeds.tolist()):
        env = gym.make("Acrobot-v1")
        env.reset(seed=s)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(2)
            total += r
            done = term or trunc
        assert returns[0, j] == returns[1, j] == total


def test_mlp_fast_path_equals_vmap_of_the_net():
    torch.manual_seed(0)
    for spec, shape in (("mlp:32x2", (4,)), ("mlp:16:tanh", (1, 8, 8))):
        flat = FlatNet(build_net(spec, shape, 3))
        assert flat.layers is not None
        w = torch.randn(5, flat.d) * 0.1
        x = torch.randn(7, *shape)
        fast = flat.scores(w, x)
        layers, flat.layers = flat.layers, None
        slow = flat.scores(w, x)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
        # act: each individual on its own observations = that individual's net on them
        obs = torch.randn(5, 6, *shape)
        flat.layers = layers
        acted = flat.act(w, obs.flatten(2))
        for i in range(5):
            flat.set_(w[i])
            with torch.no_grad():
                torch.testing.assert_close(acted[i], flat.net(obs[i]), rtol=1e-5, atol=1e-6)
    assert FlatNet(build_net("cnn3", (1, 28, 28), 10)).layers is None  # not an MLP: vmap


@pytest.mark.slow
def test_deep_ga_balances_cartpole_and_the_harness_reports_returns():
    r = bb.train("deep-ga", data="gym:CartPole-v1", net="mlp:16", epochs=1, batch_size=1,
                 max_steps=10, store=False, progress=False, energy=False,
                 options={"population": 50, "truncation": 10, "sigma": 0.05,
                          "elite_candidates": 5, "elite_evals": 5})  # fmt: skip
    m = r.metrics
    assert "test_acc" not in m and m["test_loss"] == -m["test_return"]
    assert m["test_return"] >= 475  # CartPole-v1's "solved" bar, over the 200 test episodes
    assert r.record.history[-1]["val_return"] == m["val_return"]


@pytest.mark.slow
def test_novelty_search_escapes_the_deceptive_maze_and_reward_alone_does_not():
    common = dict(data="deceptive-maze", net="mlp:32", epochs=1, batch_size=1, max_steps=60,
                  store=False, progress=False, energy=False)  # fmt: skip
    opts = {"population": 200, "truncation": 20, "sigma": 0.1, "elite_candidates": 5,
            "elite_evals": 1}  # fmt: skip
    greedy = bb.train("deep-ga", options=opts, **common).metrics["test_return"]
    novelty = bb.train("deep-ga", options={**opts, "novelty": 1.0}, **common).metrics["test_return"]
    assert greedy <= -1.9  # drawn into the cup: stuck under the bar, 2 from the goal
    assert novelty > -0.5  # out of the cup, round an arm and home


def test_atari_plays_on_the_console_ram():
    pytest.importorskip("ale_py")
    d = load_dataset("gym:ALE/Breakout-v5")
    spec = d.meta.env
    assert spec.obs_dim == 128 and spec.discrete and spec.max_steps == 1250  # 5,000 frames
    seen = []

    def policy(obs):
        seen.append(float(obs.max()))
        return torch.randn(
            *obs.shape[:2], spec.actions, generator=torch.Generator().manual_seed(len(seen))
        )

    returns, behaviour = rollout(policy, spec, d.test.x[:1], copies=2)
    assert returns.shape == (2, 1) and behaviour.shape == (2, 1, 128)
    assert max(seen) <= 1.0 and bool(torch.isfinite(returns).all())  # RAM bytes scaled by 1/255


def test_chance_of_the_maze_is_a_random_walk_that_never_reaches_the_goal():
    from beyondbp.tasks import make_task

    task = make_task(load_dataset("deceptive-maze"))
    floor = task.chance("test")
    assert floor == task.chance("test")  # seeded: the same floor every time
    assert -12 < floor < -0.5  # a random walk ends far from the goal (the goal is 0)
