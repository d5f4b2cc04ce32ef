"""Helper run in a subprocess by test_harness: a bp run that can SIGKILL or SIGINT itself at a
given step, so the interruption lands at a known point mid-epoch.

usage: python _resume_script.py STORE RUN_ID_FILE [--kill-at N | --int-at N] [--resume ID]
"""

from __future__ import annotations

import os
import signal
import sys

import beyondbp as bb
from beyondbp.rules import register
from beyondbp.rules.bp import Backprop


@register("bp-selfkill", "bp that sends itself a signal at step N (tests only)")
class SelfKill(Backprop):
    steps = 0

    def step(self, x, y):
        SelfKill.steps += 1
        for flag, sig in (("--kill-at", signal.SIGKILL), ("--int-at", signal.SIGINT)):
            if flag in sys.argv and SelfKill.steps == int(sys.argv[sys.argv.index(flag) + 1]):
                os.kill(os.getpid(), sig)
        return super().step(x, y)


store, id_file = sys.argv[1], sys.argv[2]
resume = sys.argv[sys.argv.index("--resume") + 1] if "--resume" in sys.argv else None
cfg = dict(epochs=4, batch_size=32, patience=None, seed=3, progress=False, energy=False)
if resume:
    res = bb.train("bp-selfkill", "digits", "mlp:64", store=store, resume=resume)
else:
    # the id is known before training starts: write it as soon as the record exists
    import beyondbp.api as api

    orig = api.Trainer.fit

    def fit(self, resume=False):
        with open(id_file, "w") as f:
            f.write(self.record.id)
        return orig(self, resume)

    api.Trainer.fit = fit
    res = bb.train("bp-selfkill", "digits", "mlp:64", options={"lr": 3e-3}, store=store, **cfg)
print("STATUS", res.record.status, res.metrics.get("test_acc"))
